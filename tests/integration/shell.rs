//! `vmctl completions` and `vmctl man`: the bash script registers with bash and completes the
//! home's VM names through vmctl itself; the manual pages, one per subcommand, render with
//! `man -l`.

use std::process::Command;

use crate::harness::{TestHome, vmctl_bin};

/// What bash's completion offers for `words` (the last one being completed), with the script
/// `vmctl completions bash` printed sourced.
fn bash_complete(t: &TestHome, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "source <('{bin}' completions bash) || exit 9\n\
         fn=$(complete -p vmctl | sed 's/.* -F \\([^ ]*\\) .*/\\1/')\n\
         COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; COMP_TYPE=9\n\
         \"$fn\" vmctl '{cur}' '{prev}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        bin = vmctl_bin(),
        words = quoted.join(" "),
        cword = words.len() - 1,
        cur = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .env("VMCTL_HOME", t.home())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_the_homes_vm_and_network_names() {
    let t = TestHome::new();
    for vm in ["web", "worker", "db"] {
        t.ok(&["create", vm, "--mem", "256M", "--disk", "1G"]);
    }
    t.ok(&["network", "create", "backend"]);
    let out = Command::new("bash")
        .args([
            "-c",
            &format!(
                "source <('{}' completions bash) && complete -p vmctl",
                vmctl_bin()
            ),
        ])
        .output()
        .unwrap();
    let registered = String::from_utf8_lossy(&out.stdout);
    assert!(
        registered.contains("-F _clap_complete_vmctl vmctl"),
        "{out:?}"
    );

    assert_eq!(
        bash_complete(&t, &["vmctl", "start", "w"]),
        ["web", "worker"]
    );
    assert_eq!(bash_complete(&t, &["vmctl", "stats", "d"]), ["db"]);
    assert_eq!(
        bash_complete(&t, &["vmctl", "network", "rm", "b"]),
        ["backend"]
    );
    // A new VM's name is not one of the home's.
    assert!(bash_complete(&t, &["vmctl", "create", "w"]).is_empty());
    let subcommands = bash_complete(&t, &["vmctl", "sna"]);
    assert_eq!(subcommands, ["snapshot"]);

    for (shell, mark) in [("zsh", "compdef"), ("fish", "complete")] {
        let script = t.ok(&["completions", shell]);
        assert!(
            script.contains(mark) && script.contains(vmctl_bin()),
            "{shell}: {script}"
        );
    }
}

#[test]
fn there_is_a_manual_page_per_subcommand_and_man_renders_them() {
    let t = TestHome::bare();
    let dir = tempfile::tempdir().unwrap();
    t.ok(&["man", dir.path().to_str().unwrap()]);
    let pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for page in [
        "vmctl.1",
        "vmctl-start.1",
        "vmctl-snapshot-create.1",
        "vmctl-metrics.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "{page} missing: {pages:?}");
    }
    assert!(pages.len() > 50, "{} pages", pages.len());
    let out = Command::new("man")
        .arg("-l")
        .arg(dir.path().join("vmctl-start.1"))
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .output()
        .expect("man (man-db)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("vmctl-start") && text.contains("--wait"),
        "{text}"
    );
}
