//! The Candy Lua dissector (`conformance/wireshark/candy.lua`) on a `candy-mesh` capture:
//! tshark (Debian's `tshark`; `bash .ci/setup` installs it) must find every message the
//! run sent — 4 VMAC, 4 DHCP requests and 4 grants, 4 AUTH, and the FORWARDs (64 echo
//! requests and 64 answers, each crossing client -> server and server -> client, plus the
//! segments of the TCP connections; the clean profile resends nothing): as many as
//! `tunnelbed replay` decodes from the same capture — hand each FORWARD's packet to the
//! IP dissector, and report nothing malformed. The dissector is the one `tunnelbed
//! wireshark install` put into a private HOME's personal plugin folder, loaded by tshark
//! from there on its own (no `-X lua_script:`), so the test also covers the install.

use std::path::PathBuf;
use std::process::Command;

use tunnelbed_sim::scenario::{run, RunConfig};
use tunnelbed_sim::scenarios;

#[test]
fn dissector_sees_every_candy_message() {
    let s = scenarios::find("candy-mesh").expect("candy-mesh is registered");
    let r = run(
        &s,
        &RunConfig {
            seed: 3,
            profile: "clean".into(),
            capture: true,
            sabotage: None,
            tcp: Default::default(),
        },
    )
    .expect("the run");
    assert!(r.ok(), "{}", r.failure_summary());
    let pcap = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("candy-mesh.pcapng");
    std::fs::write(&pcap, r.pcap.as_deref().expect("a capture")).unwrap();
    let home = installed_home();
    let out = Command::new("tshark")
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .arg("-r")
        .arg(&pcap)
        .args([
            "-T",
            "fields",
            "-e",
            "candy.type",
            "-e",
            "ip.dst",
            "-e",
            "_ws.malformed",
        ])
        .output()
        .unwrap_or_else(|e| panic!("tshark: {e} (install Debian's tshark: bash .ci/setup)"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tshark failed: {stderr}");
    assert!(!stderr.contains("Lua"), "Lua errors: {stderr}");
    let mut count = std::collections::BTreeMap::new();
    for line in stdout.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        assert!(
            cols.get(2).is_none_or(|m| m.is_empty()),
            "malformed packet: {line}"
        );
        for t in cols[0].split(',').filter(|t| !t.is_empty()) {
            *count.entry(t.to_string()).or_insert(0u32) += 1;
        }
    }
    let get = |t: &str| count.get(t).copied().unwrap_or(0);
    assert_eq!(get("4"), 4, "VMAC: {count:?}");
    assert_eq!(get("2"), 8, "DHCP: {count:?}");
    assert_eq!(get("0"), 4, "AUTH: {count:?}");
    let ours = tunnelbed::replay::render(r.pcap.as_deref().expect("a capture"))
        .expect("replay")
        .lines()
        .filter(|l| l.contains(" FORWARD "))
        .count();
    assert!(ours > 256, "replay found {ours} FORWARD messages");
    assert_eq!(
        get("1") as usize,
        ours,
        "FORWARD, tshark vs replay: {count:?}"
    );
    // The inner packets are dissected: their virtual destinations show up as ip.dst.
    assert!(stdout.contains("10.77.0.1"), "no inner IP packet dissected");
}

/// A private HOME into which the `tunnelbed wireshark install` command (the binary, run
/// as a user would) wrote the dissectors; checks that candy.lua is among them, byte for
/// byte the shipped one, and that tshark started with that HOME registers the protocol.
fn installed_home() -> PathBuf {
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("candy-wireshark-home");
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tunnelbed"))
        .env("HOME", &home)
        .args(["wireshark", "install"])
        .output()
        .expect("running tunnelbed wireshark install");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wireshark install: {stdout}");
    let lua = home.join(".local/lib/wireshark/plugins/candy.lua");
    assert!(
        stdout.contains(&format!("installed {}", lua.display())),
        "install did not report candy.lua: {stdout}"
    );
    let shipped = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance/wireshark/candy.lua"),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(&lua).expect("candy.lua installed"),
        shipped,
        "the installed candy.lua differs from conformance/wireshark/candy.lua"
    );
    let out = Command::new("tshark")
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .args(["-G", "protocols"])
        .output()
        .unwrap_or_else(|e| panic!("tshark: {e} (install Debian's tshark: bash .ci/setup)"));
    let protocols = String::from_utf8_lossy(&out.stdout);
    assert!(
        protocols
            .lines()
            .any(|l| l.split('\t').nth(2) == Some("candy")),
        "tshark with the installed plugins does not register the candy protocol: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    home
}
