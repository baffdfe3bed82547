//! The Wireshark dissectors shipped in `conformance/wireshark/` (KCP, h2tunnel inside
//! KCP or TCP, pong, VLESS, Candy), embedded in the binary so `tunnelbed wireshark install` can put
//! them where Wireshark and tshark load personal Lua plugins.

use std::path::{Path, PathBuf};

/// Each dissector's file name and Lua source. h2tunnel comes first because the KCP
/// dissector hands it the tunnel frames it reassembles.
pub const DISSECTORS: &[(&str, &str)] = &[
    (
        "h2tunnel.lua",
        include_str!("../conformance/wireshark/h2tunnel.lua"),
    ),
    ("kcp.lua", include_str!("../conformance/wireshark/kcp.lua")),
    (
        "pong.lua",
        include_str!("../conformance/wireshark/pong.lua"),
    ),
    (
        "vless.lua",
        include_str!("../conformance/wireshark/vless.lua"),
    ),
    (
        "candy.lua",
        include_str!("../conformance/wireshark/candy.lua"),
    ),
];

/// Where Wireshark (3.x, 4.x on Linux and macOS) loads a user's Lua plugins from:
/// `$HOME/.local/lib/wireshark/plugins`. `None` without a home directory.
pub fn default_plugin_dir() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".local/lib/wireshark/plugins"))
}

/// Writes every dissector into `dir` (created if missing), replacing older copies;
/// returns the files written.
pub fn install(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::with_capacity(DISSECTORS.len());
    for (name, src) in DISSECTORS {
        let p = dir.join(name);
        std::fs::write(&p, src)?;
        out.push(p);
    }
    Ok(out)
}

/// The `-X lua_script:FILE` arguments that load the dissectors in `dir` into one tshark
/// run (in the order of [`DISSECTORS`]).
pub fn tshark_args(dir: &Path) -> Vec<String> {
    DISSECTORS
        .iter()
        .flat_map(|(name, _)| {
            [
                "-X".to_string(),
                format!("lua_script:{}", dir.join(name).display()),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_writes_every_dissector() {
        let dir = std::env::temp_dir().join(format!("tunnelbed-ws-{}", std::process::id()));
        let files = install(&dir).expect("install");
        assert_eq!(files.len(), DISSECTORS.len());
        for (p, (_, src)) in files.iter().zip(DISSECTORS) {
            assert_eq!(std::fs::read_to_string(p).expect("read back"), *src);
        }
        let args = tshark_args(&dir);
        assert_eq!(args.len(), 2 * DISSECTORS.len());
        assert!(args[1].ends_with("h2tunnel.lua"), "{args:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
