//! `switchboard-smol`: the Switchboard engine on the smol runtime, with the
//! same command line and config file as `switchboard`.

#![forbid(unsafe_code)]

use switchboard_common::Command;

fn main() {
    let cli = switchboard_common::parse_cli();
    let Command::Serve(args) = cli.command;
    let settings = match args.resolve() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchboard-smol: {e}");
            std::process::exit(2);
        }
    };
    switchboard_common::init_logging(&settings.log_level);
    let run = || -> std::io::Result<()> {
        let stop = switchboard_smol::stop_signals()?;
        smol::block_on(switchboard_smol::serve(settings, stop))
    };
    if let Err(e) = run() {
        eprintln!("switchboard-smol: {e}");
        std::process::exit(1);
    }
}
