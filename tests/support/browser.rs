//! Debian's headless Chromium, for tests of the pages kvant writes: the
//! DOM it builds and a screenshot's pixels.

use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> PathBuf {
    let exe =
        std::env::var_os("KVANT_CHROMIUM").map_or_else(|| PathBuf::from("chromium"), PathBuf::from);
    let ok = Command::new(&exe)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} not found: install Debian's chromium (scripts/test.sh does) or set KVANT_CHROMIUM",
        exe.display()
    );
    exe
}

/// Runs headless Chromium with the flags a closed network needs.
pub fn browse(profile: &Path, args: &[String]) -> std::process::Output {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The RGB(A) pixels of a PNG screenshot, one slice per pixel.
pub fn screenshot_pixels(shot: &Path) -> Vec<Vec<u8>> {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(shot).expect("screenshot written"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("frame");
    let channels = info.color_type.samples();
    assert!(channels >= 3, "colour screenshot");
    buf[..info.buffer_size()]
        .chunks(channels)
        .map(<[u8]>::to_vec)
        .collect()
}

/// The page's DOM after Chromium rendered it.
pub fn dom(page: &Path, profile: &Path) -> String {
    let out = browse(
        profile,
        &["--dump-dom".into(), format!("file://{}", page.display())],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Pixels that are not near-white (something is drawn there).
pub fn ink(pixels: &[Vec<u8>]) -> usize {
    pixels
        .iter()
        .filter(|p| p[..3].iter().any(|&c| c < 200))
        .count()
}

/// Pixels within `tolerance` of `rgb` on every channel.
pub fn near(pixels: &[Vec<u8>], rgb: [u8; 3], tolerance: u8) -> usize {
    pixels
        .iter()
        .filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) < tolerance))
        .count()
}

/// The chosen marker's gold (`#f0b429` in the page's style).
pub const GOLD: [u8; 3] = [0xf0, 0xb4, 0x29];
