//! The detectors through their public seams, one test binary: the golden corpus,
//! the public injection corpora, and each detector's behaviour and properties.

mod common;

mod corpus;
mod definitions;
mod injection_corpora;
mod policy;
mod provenance;
mod seams;
mod sequence;
mod session;
mod volume;
