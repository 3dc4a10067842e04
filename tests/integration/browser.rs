//! The timeline page in a real headless browser (Debian's chromium; `tests/browser/install.sh`
//! installs it where it is missing, and `.ci/run` runs that): it loads without a console
//! message, fetches nothing over the network, shows the picture in its DOM, and its screenshot
//! is not blank. A control page with a console error, a fetch and nothing to see proves that each
//! of these checks can fail on this browser.
//!
//! What chromium does here (Debian's 156, headless, as root so `--no-sandbox`): `--screenshot`
//! writes a PNG of the window; `--enable-logging=stderr --v=0` prints every console message of
//! the page as `INFO:CONSOLE:<line>] "<text>", source: <url>` (errors and plain logs alike, so
//! any such line fails the page, which has no script); `--log-net-log` writes a JSON log of
//! every request, the page's own with a network isolation key of `file://` (the browser's
//! background requests have other keys); `--dump-dom` prints the DOM after load. Its stderr is
//! also full of D-Bus errors about a session bus a container does not have: noise, not the page's.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The browser, installed first where it is missing. None (after saying why, loudly) when it
/// cannot be had on this machine, outside CI; in CI (`CI` set) that is a failure, since `.ci/run`
/// installs it.
fn chromium() -> Option<PathBuf> {
    let find = || std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).map(|dir| dir.join("chromium")).find(|path| path.is_file());
    if let Some(found) = find() {
        return Some(found);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/browser/install.sh");
    let installed = Command::new("bash").arg(script).stdin(Stdio::null()).output();
    if let Some(found) = find() {
        return Some(found);
    }
    let why = match installed {
        Ok(output) => format!("{} said: {}", script, String::from_utf8_lossy(&output.stderr).trim()),
        Err(error) => format!("cannot run {script}: {error}"),
    };
    assert!(std::env::var_os("CI").is_none(), "chromium is missing in CI, and installing it failed ({why})");
    eprintln!("\n=========================================================================");
    eprintln!("SKIPPED: the timeline's browser test: chromium is not installed and could not be ({why}).");
    eprintln!("Install it with: bash tests/browser/install.sh (root, Debian's archive reachable).");
    eprintln!("=========================================================================\n");
    None
}

/// What the browser made of a page.
struct Browsed {
    /// The PNG of a 1400x900 window.
    screenshot: Vec<u8>,
    /// The page's console messages (lines of chromium's log).
    console: Vec<String>,
    /// URLs the page itself requested from the network.
    fetched: Vec<String>,
    dom: String,
}

/// Runs chromium on `args` + the page, killing it (its whole process group) past a time limit.
fn chromium_run(browser: &Path, dir: &Path, name: &str, args: &[String]) -> (String, String) {
    use std::os::unix::process::CommandExt as _;
    let (out, err) = (dir.join(format!("{name}.out")), dir.join(format!("{name}.err")));
    let mut child = Command::new(browser)
        .args(["--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", dir.join(format!("{name}-profile")).display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .process_group(0)
        .spawn()
        .expect("chromium starts");
    // Wall time bounds the test only.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.wait();
            panic!("chromium {args:?} still ran after 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (std::fs::read_to_string(&out).unwrap_or_default(), std::fs::read_to_string(&err).unwrap_or_default());
    assert!(status.success(), "chromium {args:?} failed ({status}): {stderr}");
    (stdout, stderr)
}

fn browse(browser: &Path, dir: &Path, page: &Path) -> Browsed {
    let url = format!("file://{}", page.display());
    let name = page.file_stem().unwrap().to_string_lossy().to_string();
    let (png, net) = (dir.join(format!("{name}.png")), dir.join(format!("{name}.netlog.json")));
    let (_, log) = chromium_run(
        browser,
        dir,
        &format!("{name}-shot"),
        &[format!("--screenshot={}", png.display()), "--window-size=1400,900".into(), "--enable-logging=stderr".into(), "--v=0".into(), format!("--log-net-log={}", net.display()), url.clone()],
    );
    let console = log.lines().filter(|line| line.contains(":CONSOLE")).map(str::to_string).collect();
    let (dom, _) = chromium_run(browser, dir, &format!("{name}-dom"), &["--dump-dom".into(), url]);
    Browsed { screenshot: std::fs::read(&png).expect("chromium wrote the screenshot"), console, fetched: page_requests(&net), dom }
}

/// The network requests the page made, from chromium's net log: a request job whose network
/// isolation key is the page's (`file://`) for a URL that is not a file.
fn page_requests(net: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(net).expect("chromium wrote the net log");
    // Chromium may end the log without closing it when it exits: close it as it would.
    let log: Value = serde_json::from_str(&text).or_else(|_| serde_json::from_str(&format!("{}]}}", text.trim_end().trim_end_matches(',')))).expect("the net log is JSON");
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].as_u64().expect("the net log names URL_REQUEST_START_JOB");
    let events = log["events"].as_array().cloned().unwrap_or_default();
    events
        .iter()
        .filter(|event| event["type"].as_u64() == Some(start_job))
        .filter(|event| event["params"]["network_isolation_key"].as_str().is_some_and(|key| key.starts_with("file://")))
        .filter_map(|event| event["params"]["url"].as_str())
        .filter(|url| !url.starts_with("file:"))
        .map(str::to_string)
        .collect()
}

/// The screenshot's size, and how much its pixels vary: the luminance's variance, and the
/// share of pixels that are not near white.
fn picture_stats(png_bytes: &[u8]) -> (u32, u32, f64, f64) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buffer = vec![0; reader.output_buffer_size().expect("a sane PNG")];
    let frame = reader.next_frame(&mut buffer).expect("a frame");
    let channels = frame.color_type.samples();
    let pixels: Vec<f64> = buffer[..frame.buffer_size()]
        .chunks(channels)
        .map(|pixel| match channels {
            1 | 2 => pixel[0] as f64,
            _ => 0.299 * pixel[0] as f64 + 0.587 * pixel[1] as f64 + 0.114 * pixel[2] as f64,
        })
        .collect();
    let mean = pixels.iter().sum::<f64>() / pixels.len() as f64;
    let variance = pixels.iter().map(|p| (p - mean) * (p - mean)).sum::<f64>() / pixels.len() as f64;
    let inked = pixels.iter().filter(|p| **p < 230.0).count() as f64 / pixels.len() as f64;
    (frame.width, frame.height, variance, inked)
}

#[test]
fn the_timeline_page_opens_in_a_headless_browser_without_errors_and_is_not_blank() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    // A run with violations, crashes and faults: everything the page can show.
    let page = dir.path().join("timeline.html");
    let ran = crate::support::mailchaos_within(
        &["timeline", "scenarios/fast/store-crash.toml", "--seed", "2", "--defect", "reuse-uid-after-restart", "-o", page.to_str().unwrap()],
        Duration::from_secs(120),
    )
    .unwrap();
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    let browsed = browse(&browser, dir.path(), &page);
    assert!(browsed.console.is_empty(), "the page logged to the console: {:?}", browsed.console);
    assert!(browsed.fetched.is_empty(), "the page fetched from the network: {:?}", browsed.fetched);
    assert!(browsed.dom.contains("<svg") && browsed.dom.contains("provider-gmail") && browsed.dom.contains("A17 #"), "the DOM after load lacks the picture: {}", &browsed.dom[..browsed.dom.len().min(2000)]);
    let (width, height, variance, inked) = picture_stats(&browsed.screenshot);
    eprintln!("screenshot {width}x{height}: luminance variance {variance:.1}, {:.1}% of pixels inked", inked * 100.0);
    assert_eq!((width, height), (1400, 900));
    assert!(variance > 200.0 && inked > 0.02, "the screenshot looks blank: luminance variance {variance:.1}, {:.1}% of pixels inked", inked * 100.0);

    // The control: a page with a console error, a fetch, and nothing to see. Each check must see it.
    let control = dir.path().join("control.html");
    std::fs::write(&control, "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><link rel=\"stylesheet\" href=\"http://timeline-test.invalid/x.css\"></head><body><script>console.error(\"control-error\")</script></body></html>").unwrap();
    let browsed = browse(&browser, dir.path(), &control);
    assert!(browsed.console.iter().any(|line| line.contains("control-error")), "chromium's console log did not show the control's error");
    assert!(browsed.fetched.iter().any(|url| url.contains("timeline-test.invalid")), "the net log did not show the control's fetch: {:?}", browsed.fetched);
    let (_, _, variance, inked) = picture_stats(&browsed.screenshot);
    assert!(variance < 1.0 && inked == 0.0, "the blank control's screenshot was not blank: {variance} {inked}");
}
