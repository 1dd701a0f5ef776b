//! The history writer and reader, one test binary: round trips and a writer killed
//! mid-file.

mod crash;
mod history;
