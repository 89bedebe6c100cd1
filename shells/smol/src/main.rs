//! `switchboard-smol`: the Switchboard engine on the smol runtime, with the
//! same command line and config file as `switchboard`.

#![forbid(unsafe_code)]

fn main() {
    switchboard_common::main_with("switchboard-smol", |settings| {
        let stop = switchboard_smol::stop_signals()?;
        smol::block_on(switchboard_smol::serve(settings, stop))
    });
}
