//! `switchboard`: the Switchboard engine on a mio event loop.

#![forbid(unsafe_code)]

mod server;

fn main() {
    switchboard_common::main_with("switchboard", server::run);
}
