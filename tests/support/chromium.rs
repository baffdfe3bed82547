//! Headless Chromium for the tests that check a page or an SVG renders: a screenshot with
//! a bounded wait, and the size of the PNG it wrote. Shared by `html_report` and the
//! `plot_*` tests (each test file uses part of it).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Headless Chromium's screenshot of `page` (1000 x 1600), or a failure saying how to
/// install it. Bounded by a generous timeout.
pub(crate) fn screenshot(page: &Path, png: &Path, profile: &Path) {
    let found = Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "chromium is not installed: run `bash .ci/setup` or `apt-get install -y chromium`"
    );
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1000,1600",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "chromium exited with {st}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium took over 180 s to render {}", page.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Width and height from a PNG's IHDR.
pub(crate) fn png_size(b: &[u8]) -> (u32, u32) {
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&b[12..16], b"IHDR");
    (
        u32::from_be_bytes(b[16..20].try_into().unwrap()),
        u32::from_be_bytes(b[20..24].try_into().unwrap()),
    )
}

/// Screenshots `file` and a blank page of the same window in `dir` and checks the
/// picture holds far more than the blank one (`factor` times its PNG size at least).
pub(crate) fn assert_renders(file: &Path, dir: &Path, factor: usize) {
    let blank = dir.join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let (shot, blank_shot) = (dir.join("shot.png"), dir.join("blank.png"));
    screenshot(file, &shot, &dir.join("chromium-1"));
    screenshot(&blank, &blank_shot, &dir.join("chromium-2"));
    let (png, empty) = (
        std::fs::read(&shot).unwrap(),
        std::fs::read(&blank_shot).unwrap(),
    );
    assert_eq!(png_size(&png), (1000, 1600));
    println!(
        "screenshot of {}: {} bytes, blank page {} bytes",
        file.display(),
        png.len(),
        empty.len()
    );
    assert!(
        png.len() > factor * empty.len(),
        "the screenshot of {} ({} bytes) looks empty next to a blank page ({} bytes)",
        file.display(),
        png.len(),
        empty.len()
    );
}
