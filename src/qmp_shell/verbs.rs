//! The shell's own verbs beside QMP's commands: their names and help lines, for completion and
//! `help`.

/// The shell's own verbs, completed and listed beside QMP's commands.
pub(super) const BUILTINS: &[(&str, &str)] = &[
    (
        "help",
        "help [CMD]: list commands, or one command's arguments",
    ),
    (
        "hmp",
        "hmp LINE: a human monitor command (e.g. hmp info status)",
    ),
    (
        "snapshot",
        "snapshot create [TAG] | list | revert TAG [--force] | delete TAG",
    ),
    ("pause", "pause: freeze the guest's CPUs (QMP stop)"),
    ("resume", "resume: let a paused guest run on (QMP cont)"),
    ("reset", "reset: press the reset button (QMP system_reset)"),
    ("powerdown", "powerdown: press the ACPI power button"),
    (
        "quit",
        "quit, exit, Ctrl-D: leave the shell (the VM keeps running)",
    ),
    ("exit", "exit: leave the shell"),
];
