//! `completion bash|zsh|fish|elvish|powershell`: the shell's completion script for joulectl,
//! generated from its flags by clap_complete, on stdout (`source <(joulectl completion bash)`).

use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::args::Cli;
use crate::render;

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "joulectl", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

pub fn completion(shell: Shell) -> anyhow::Result<()> {
    render::print(&script(shell))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_are_consistent() {
        // clap's own checks of the whole command tree (duplicate flags, bad defaults).
        Cli::command().debug_assert();
    }

    #[test]
    fn scripts_complete_joulectl_and_its_verbs() {
        let bash = script(Shell::Bash);
        assert!(bash.contains("joulectl"), "{bash}");
        for verb in [
            "get",
            "apply",
            "describe",
            "explain",
            "completion",
            "--selector",
            "--watch",
        ] {
            assert!(bash.contains(verb), "bash completion lacks {verb}");
        }
        assert!(script(Shell::Zsh).starts_with("#compdef joulectl"));
        let fish = script(Shell::Fish);
        assert!(fish.contains("complete -c joulectl"), "{fish}");
        assert!(fish.contains("explain"), "{fish}");
    }
}
