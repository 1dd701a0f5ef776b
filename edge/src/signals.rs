//! SIGINT, SIGTERM and SIGHUP, taken by one thread with `sigwait(2)`: either raised as
//! a flag the main loop polls (the engine and the sink's HTTP proxy stop cleanly:
//! checkpoints, spools and event files are written out), or passed on to a child (the
//! stdio proxy's server ends when its agent is told to). A thread-directed signal
//! cannot reach another thread's `sigwait`, and a process-directed one would end a test
//! harness whose threads started before [`block`]: the end-to-end tests send SIGTERM to
//! the real binaries instead (the engine's clean stop, the proxies' forwarding).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Lets SIGPIPE end the process quietly, as it ends `cat`: for commands whose product
/// is their standard output (`toolgate definitions list | head`). Rust ignores it by
/// default, so a closed pipe is an error on every later write, and `println!` panics
/// on it. Not for anything writing to sockets: TLS and HTTP clients write with
/// `writev`, which raises SIGPIPE on a reset peer.
pub fn default_sigpipe() {
    // SAFETY: resetting one signal's disposition to its default, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The termination signals, blocked: see [`block`].
#[derive(Clone, Copy)]
pub struct Blocked {
    set: libc::sigset_t,
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and every thread it starts
/// afterwards, for one thread to take them. Call it before any thread starts: one
/// started earlier still gets a signal's default action, and the process ends without
/// writing anything out.
pub fn block() -> Blocked {
    // SAFETY: plain libc signal-set calls on a zeroed sigset_t owned by this frame.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        Blocked { set }
    }
}

impl Blocked {
    /// The signal set, for a child to unblock before `exec` (it inherits the mask).
    pub fn set(&self) -> libc::sigset_t {
        self.set
    }

    /// Starts a thread that waits for the first of the signals, calls `then` with its
    /// number, and raises the returned flag. Later ones stay blocked: a second Ctrl-C
    /// does not cut the clean stop short.
    pub fn raise_on_first(
        self,
        then: impl FnOnce(i32) + Send + 'static,
    ) -> io::Result<Arc<AtomicBool>> {
        let stop = Arc::new(AtomicBool::new(false));
        let raised = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(number) = self.wait() {
                    then(number);
                    raised.store(true, Ordering::Relaxed);
                }
            })?;
        Ok(stop)
    }

    /// Starts a thread that passes every one of the signals on to process `pid`, for
    /// the life of this process.
    pub fn forward_to(self, pid: u32) -> io::Result<()> {
        let pid = i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                while let Some(number) = self.wait() {
                    // SAFETY: kill with a pid this process spawned.
                    unsafe { libc::kill(pid, number) };
                }
            })?;
        Ok(())
    }

    fn wait(&self) -> Option<i32> {
        let mut number = 0;
        // SAFETY: sigwait on a valid, initialised set.
        (unsafe { libc::sigwait(&self.set, &mut number) } == 0).then_some(number)
    }
}
