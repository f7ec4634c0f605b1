//! Standard output into a closed pipe.

/// Restores the default action of SIGPIPE, which the Rust runtime ignores,
/// so that a listing piped into `head` ends quietly when the reader exits,
/// as `cat` and `ls` do, instead of panicking in `println!`. Only for
/// commands that write to no socket or pipe of their own: the NBD server
/// and the mount server must keep ignoring it.
pub fn default_sigpipe() {
    // SAFETY: SIG_DFL installs no handler code, and no other thread runs yet.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
}
