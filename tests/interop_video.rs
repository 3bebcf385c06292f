//! Interop: a video window through xfwd, end to end with Debian's real xpra
//! 3.1.3.
//!
//! A real `xpra start` session runs two windows: `tests/py/repaint.py` (a
//! 640x480 Gtk window whose content changes every 40 ms) and an xterm that
//! resizes itself every 2 s (xterm's window ops, `ESC [ 8 ; rows ; cols t`).
//! xfwd is in front; a real `xpra attach` client (cairo painting,
//! `--opengl=no`, `-d paint,draw`) runs on its own Xvfb. The test checks
//! what a user would see and what each side was sent:
//!
//! - the client's display shows both windows; screenshots of it (python3-pil)
//!   are not blank and the repainting window's area changes from one to the
//!   next;
//! - the xterm's new sizes reach the client's window, and the grown window
//!   is painted;
//! - with transcoding on ([`TRANSCODE`]): the client's log shows h264 draws
//!   for the repainting window decoded by its video decoder (dec_avcodec2),
//!   and the session's `xpra info` shows that the session was told rgb only
//!   (no mmap) and sent rgb only.
//!
//! What it relies on in xpra 3.1.3:
//!
//! - client log, category `draw` (client/mixins/window_manager.py
//!   `_do_draw`): `process_draw: LEN TYPE for window WID, sequence N, WxH at
//!   X,Y using CODING encoding with options=...`, and category `paint`:
//!   `record_decode_time(True, ) wid=WID, b'h264': WxH, Tms` (the paint
//!   succeeded) and (client/window_backing_base.py
//!   `paint_with_video_decoder`) `paint_with_video_decoder: new <class
//!   'xpra.codecs.dec_avcodec2.decoder.Decoder'>(W,H,CSC)`;
//! - session info (server/window/window_stats.py `get_info`, one client
//!   so under `client.`): `client.window.WID.total_frames.CODING=N` (frames
//!   the session sent that window's client, per coding; a delta frame also
//!   counts as `delta`), `client.encodings=(...)`,
//!   `client.encodings.core=(...)` (what the client's hello, as the session
//!   got it, offered), `client.mmap.enabled=`; `windows.WID.title=`.
//!
//! Needs xpra, Xvfb, x11-utils, xterm, python3-gi-cairo (Gtk drawing with
//! cairo, for repaint.py and for the client's own painting) and python3-pil
//! (screenshots); fails when they are missing unless `XFWD_SKIP_INTEROP=1`.
//! On failure it prints where the logs and screenshots are.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The xfwd option that turns transcoding on; `XFWD_INTEROP_VIDEO_FLAG`
/// (`none` or empty: off) runs the same test as a plain relay.
const TRANSCODE: Option<&str> = Some("--proxy-video-encoders=auto");

fn transcode_flag() -> Option<String> {
    match std::env::var("XFWD_INTEROP_VIDEO_FLAG") {
        Ok(v) if v.is_empty() || v == "none" => None,
        Ok(v) => Some(v),
        Err(_) => TRANSCODE.map(str::to_owned),
    }
}

const REPAINT_TITLE: &str = "xfwd-repaint";
const XTERM_TITLE: &str = "xfwd-resize";
/// Where repaint.py puts its window (below the xterm, which stays within
/// 0,0 724x524): the client puts its window there too.
const REPAINT_AT: (u32, u32) = (0, 540);

fn py(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

/// Whether the Python pieces are here (Gtk drawing with cairo, PIL's X
/// screenshots); panics with advice when not (unless skipping).
fn python_pieces_present() -> bool {
    let ok = Command::new(python())
        .args([
            "-c",
            "import gi; gi.require_version('Gtk', '3.0'); gi.require_foreign('cairo'); \
             from gi.repository import Gtk; from PIL import ImageGrab",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if skip_interop("video interop test (python3-gi-cairo or python3-pil missing)") {
        return false;
    }
    panic!(
        "the video interop test needs Debian's python3-gi-cairo and python3-pil: \
         apt-get install -y python3-gi-cairo python3-pil (or set XFWD_SKIP_INTEROP=1)"
    );
}

/// The session: an `xpra start` with the repainting window and the
/// resizing xterm, stopped on drop.
/// The session: a repainting window and an xterm that resizes itself.
fn video_session(display: u32, dir: &Path) -> Session {
    // The xterm resizes itself every 2 s: 100x30, then 120x40 (cells).
    let resize = dir.join("resize.sh");
    std::fs::write(
        &resize,
        "i=0\nwhile :; do\n  printf '\\033[8;30;100t'; echo \"small $i\"; sleep 2\n  \
         printf '\\033[8;40;120t'; echo \"big $i\"; sleep 2\n  i=$((i+1))\ndone\n",
    )
    .unwrap();
    let repaint = format!(
        "--start={} {} 120 {} {}",
        python().display(),
        py("repaint.py").display(),
        REPAINT_AT.0,
        REPAINT_AT.1
    );
    let xterm = format!(
        "--start=xterm -T {XTERM_TITLE} -xrm 'XTerm*allowWindowOps: true' -e /bin/sh {}",
        resize.display()
    );
    Session::start_programs(display, dir, &[&repaint, &xterm], "both windows", |w| {
        w.contains(&format!("\"{REPAINT_TITLE}\"")) && w.contains(XTERM_TITLE)
    })
}

/// `xpra info` against the session's own socket, as `key=value` pairs.
fn session_info(s: &Session) -> BTreeMap<String, String> {
    let out = Command::new("xpra")
        .env("PATH", SYSTEM_PATH)
        .args(["info", &format!(":{}", s.display)])
        .arg(format!("--socket-dirs={}", s.dir.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The session's window id for the window titled `title`.
fn wid_of(info: &BTreeMap<String, String>, title: &str) -> Option<u32> {
    info.iter().find_map(|(k, v)| {
        let rest = k.strip_prefix("windows.")?;
        let (wid, key) = rest.split_once('.')?;
        (key == "title" && v == title).then(|| wid.parse().ok())?
    })
}

/// Frames the session sent its client for window `wid`, per coding
/// (`client.window.WID.total_frames.CODING=N`; `client.N.` when several
/// clients are attached).
fn frames_sent(info: &BTreeMap<String, String>, wid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (k, v) in info {
        let Some(rest) = k.strip_prefix("client.") else {
            continue;
        };
        // Skip a client index, if any.
        let rest = match rest.split_once('.') {
            Some((n, r)) if n.parse::<u32>().is_ok() => r,
            _ => rest,
        };
        let Some(coding) = rest.strip_prefix(&format!("window.{wid}.total_frames.")) else {
            continue;
        };
        if let Ok(n) = v.parse::<u64>() {
            *out.entry(coding.to_owned()).or_insert(0) += n;
        }
    }
    out
}

/// The names in a Python tuple as `xpra info` prints it: `('h264', 'rgb')`.
fn tuple_items(v: &str) -> Vec<String> {
    v.trim_matches(|c| c == '(' || c == ')' || c == '[' || c == ']')
        .split(',')
        .map(|s| s.trim().trim_matches('\'').trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// One `process_draw` line of the client's `-d draw` log.
#[derive(Debug, Clone, PartialEq)]
struct Draw {
    wid: u32,
    w: u32,
    h: u32,
    x: u32,
    y: u32,
    coding: String,
}

/// `process_draw:    5406    bytes for window   2, sequence        5,
/// 640x480  at    0,0    using   h264 encoding with options={...}`
fn parse_draw(line: &str) -> Option<Draw> {
    let rest = &line[line.find("process_draw:")? + "process_draw:".len()..];
    let rest = rest.split(" with options=").next()?;
    let t: Vec<&str> = rest.split_whitespace().collect();
    let at = |word: &str| t.iter().position(|x| *x == word);
    let wid = t
        .get(at("window")? + 1)?
        .trim_end_matches(',')
        .parse()
        .ok()?;
    let dims = t.get(at("sequence")? + 2)?;
    let (w, h) = dims.split_once('x')?;
    let pos = t.get(at("at")? + 1)?;
    let (x, y) = pos.split_once(',')?;
    let coding = t.get(at("using")? + 1)?.to_string();
    Some(Draw {
        wid,
        w: w.parse().ok()?,
        h: h.parse().ok()?,
        x: x.parse().ok()?,
        y: y.parse().ok()?,
        coding,
    })
}

fn draws(log: &str) -> Vec<Draw> {
    log.lines().filter_map(parse_draw).collect()
}

/// Paints of window `wid` the client's log says succeeded with `coding`:
/// `record_decode_time(True, ) wid=2, b'h264': 640x480, 5.0ms`.
fn painted(log: &str, wid: u32, coding: &str) -> usize {
    let a = format!("wid={wid}, b'{coding}':");
    let b = format!("wid={wid}, {coding}:");
    log.lines()
        .filter(|l| l.contains("record_decode_time(True") && (l.contains(&a) || l.contains(&b)))
        .count()
}

const DEC_AVCODEC2: &str =
    "paint_with_video_decoder: new <class 'xpra.codecs.dec_avcodec2.decoder.Decoder'>";

/// A window on the client's display: (width, height, x, y), from
/// `xwininfo -root -tree`: `0x200020 "xfwd-repaint on tcp://...":
/// ("repaint.py" "Repaint.py")  640x480+0+540  +0+540`.
fn client_window(display: u32, title: &str) -> Option<(u32, u32, u32, u32)> {
    let tree = windows(display);
    let line = tree
        .lines()
        .find(|l| l.contains(&format!("\"{title} on ")))?;
    let t: Vec<&str> = line.split_whitespace().collect();
    let abs = t.last()?.trim_start_matches('+');
    let (x, y) = abs.split_once('+')?;
    let geom = t.get(t.len().checked_sub(2)?)?;
    let (w, rest) = geom.split_once('x')?;
    let h = rest.split('+').next()?;
    Some((
        w.parse().ok()?,
        h.parse().ok()?,
        x.parse().ok()?,
        y.parse().ok()?,
    ))
}

/// What tests/py/shot.py says about a rectangle in two screenshots 1 s
/// apart.
#[derive(Debug)]
struct Shot {
    colours: [u64; 2],
    black: [f64; 2],
    changed: f64,
}

fn shot(display: u32, prefix: &Path, rect: (u32, u32, u32, u32), gap: f64) -> Option<Shot> {
    let (x, y, w, h) = rect;
    let out = Command::new(python())
        .arg(py("shot.py"))
        .arg(format!(":{display}"))
        .arg(prefix)
        .args([x, y, w, h].map(|v| v.to_string()))
        .arg(gap.to_string())
        .output()
        .unwrap();
    let raw = text(&out.stdout);
    if !out.status.success() {
        eprintln!("shot.py failed: {}", text(&out.stderr));
        return None;
    }
    let j: serde_json::Value = serde_json::from_str(raw.trim()).ok()?;
    let pair_u = |k: &str| Some([j[k][0].as_u64()?, j[k][1].as_u64()?]);
    let pair_f = |k: &str| Some([j[k][0].as_f64()?, j[k][1].as_f64()?]);
    Some(Shot {
        colours: pair_u("colours")?,
        black: pair_f("black")?,
        changed: j["changed"].as_f64()?,
    })
}

/// On a failing test, says where to look.
struct Evidence(PathBuf);

impl Drop for Evidence {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "interop_video: logs and screenshots in {}:",
                self.0.display()
            );
            if let Ok(rd) = std::fs::read_dir(&self.0) {
                let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
                names.sort();
                for n in names {
                    eprintln!("  {}", n.display());
                }
            }
        }
    }
}

/// On a failing test, keeps xfwd's log in the test's directory (dropped
/// before [`Evidence`] lists it).
struct XfwdLog<'a>(&'a Xfwd, PathBuf);

impl Drop for XfwdLog<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::fs::write(self.1.join("xfwd.log"), self.0.log());
        }
    }
}

/// Codings a session may send a client whose hello xfwd restricted to
/// raw rgb (`scroll` moves pixels the client has already painted).
const RGB_ONLY: [&str; 3] = ["rgb24", "rgb32", "scroll"];

#[test]
fn video_window_and_resizing_xterm_through_xfwd() {
    if !tools_present() || !python_pieces_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("video");
    let _evidence = Evidence(dir.clone());
    let flag = transcode_flag();
    eprintln!(
        "transcoding: {}",
        flag.as_deref().unwrap_or("off (plain relay)")
    );

    let session = video_session(free_display(361), &dir);
    let info = session_info(&session);
    let wid = wid_of(&info, REPAINT_TITLE).expect("the repainting window's id in xpra info");
    let xterm_wid = wid_of(&info, XTERM_TITLE).expect("the xterm's id in xpra info");

    let client_display = free_display(session.display + 1);
    let _x = xvfb(client_display);
    let mut args = vec!["--tcp-auth=allow".to_owned()];
    args.extend(flag.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut xfwd = Xfwd::start(&dir, &args);
    let xfwd_log = XfwdLog(&xfwd, dir.clone());
    let (_client, log) = attach_uri(
        &format!(
            "tcp://root:secret@127.0.0.1:{}/{}",
            xfwd.port, session.display
        ),
        client_display,
        &dir,
        &[],
        &["--opengl=no", "-d", "paint,draw"],
    );

    wait_until(
        "both windows on the client's display",
        Duration::from_secs(45),
        || {
            client_window(client_display, REPAINT_TITLE).is_some()
                && client_window(client_display, XTERM_TITLE).is_some()
        },
    );

    // The repainting window's frames arrive and are painted.
    wait_until(
        "20 painted frames of the repainting window",
        Duration::from_secs(30),
        || {
            let l = read(&log);
            l.lines()
                .filter(|x| {
                    x.contains("record_decode_time(True") && x.contains(&format!("wid={wid},"))
                })
                .count()
                >= 20
        },
    );

    // What the client's display shows: the window is not blank, and its
    // pixels change.
    let rect = {
        let (w, h, x, y) = client_window(client_display, REPAINT_TITLE).unwrap();
        (x, y, w, h)
    };
    let mut last = None;
    let mut n = 0;
    wait_until(
        "screenshots of the repainting window that are not blank and differ",
        Duration::from_secs(20),
        || {
            n += 1;
            let s = shot(client_display, &dir.join(format!("repaint-{n}")), rect, 1.0);
            let ok = s.as_ref().is_some_and(|s| {
                s.colours.iter().all(|c| *c >= 2)
                    && s.black.iter().all(|b| *b < 0.5)
                    && s.changed > 0.01
            });
            last = s;
            ok
        },
    );
    eprintln!("repainting window {rect:?}: {last:?}");

    // The xterm's new sizes reach the client's window...
    let mut sizes = BTreeSet::new();
    wait_until(
        "two sizes of the xterm on the client's display",
        Duration::from_secs(20),
        || {
            if let Some((w, h, _, _)) = client_window(client_display, XTERM_TITLE) {
                sizes.insert((w, h));
            }
            sizes.len() >= 2
        },
    );
    let small = *sizes.iter().min().unwrap();
    let big = *sizes.iter().max().unwrap();
    assert!(big.0 > small.0 && big.1 > small.1, "xterm sizes {sizes:?}");
    // ... and the grown window is painted: the strip it gained is xterm's
    // white background, not black, while the window has the larger size; and
    // the client was sent a draw reaching its new right edge.
    let mut n = 0;
    wait_until(
        "the grown xterm painted on the client's display",
        Duration::from_secs(20),
        || {
            let Some((w, h, x, y)) = client_window(client_display, XTERM_TITLE) else {
                return false;
            };
            if (w, h) != big {
                return false;
            }
            n += 1;
            let strip = (x + small.0, y, big.0 - small.0, big.1);
            let s = shot(client_display, &dir.join(format!("xterm-{n}")), strip, 0.1);
            let still_big =
                client_window(client_display, XTERM_TITLE).is_some_and(|g| (g.0, g.1) == big);
            still_big && s.is_some_and(|s| s.black.iter().all(|b| *b < 0.5))
        },
    );
    let xterm_draws: Vec<Draw> = draws(&read(&log))
        .into_iter()
        .filter(|d| d.wid == xterm_wid)
        .collect();
    assert!(
        xterm_draws
            .iter()
            .any(|d| d.x + d.w == big.0 && d.w > small.0),
        "no draw of the grown xterm ({big:?}) among {} draws for window {xterm_wid}",
        xterm_draws.len()
    );

    // Which codings each side sent.
    let l = read(&log);
    let mut to_client: BTreeMap<String, usize> = BTreeMap::new();
    for d in draws(&l).into_iter().filter(|d| d.wid == wid) {
        *to_client.entry(d.coding).or_insert(0) += 1;
    }
    let h264_painted = painted(&l, wid, "h264");
    let info = session_info(&session);
    let from_session = frames_sent(&info, wid);
    eprintln!(
        "repainting window {wid}: the client got {to_client:?} ({h264_painted} h264 frames \
         painted, dec_avcodec2 used: {}); the session sent {from_session:?}",
        l.contains(DEC_AVCODEC2)
    );
    assert!(
        from_session.values().sum::<u64>() > 0,
        "xpra info shows no frames sent for window {wid}"
    );

    if flag.is_some() {
        // The client decoded h264 for the repainting window with its video
        // decoder: xfwd encoded it.
        wait_until(
            "h264 frames of the repainting window decoded by dec_avcodec2",
            Duration::from_secs(20),
            || {
                let l = read(&log);
                l.contains(DEC_AVCODEC2)
                    && painted(&l, wid, "h264") >= 10
                    && draws(&l)
                        .iter()
                        .filter(|d| d.wid == wid && d.coding == "h264")
                        .count()
                        >= 10
            },
        );
        // The session was told raw rgb only, without mmap...
        let info = session_info(&session);
        for key in ["client.encodings", "client.encodings.core"] {
            let offered = tuple_items(info.get(key).map_or("", String::as_str));
            let other: Vec<&String> = offered.iter().filter(|e| !e.starts_with("rgb")).collect();
            assert!(
                !offered.is_empty() && other.is_empty(),
                "the session's {key}: {offered:?} (expected rgb only)"
            );
        }
        assert_eq!(
            info.get("client.mmap.enabled").map(String::as_str),
            Some("False"),
            "mmap"
        );
        // ... and sent rgb only, for every window.
        let wids: BTreeSet<u32> = info
            .keys()
            .filter_map(|k| {
                let r = k.strip_prefix("windows.")?;
                r.split_once('.')?.0.parse().ok()
            })
            .collect();
        for w in wids {
            let sent = frames_sent(&info, w);
            let other: Vec<&String> = sent
                .keys()
                .filter(|c| !RGB_ONLY.contains(&c.as_str()))
                .collect();
            assert!(
                other.is_empty(),
                "the session sent window {w} {sent:?}: not only raw rgb"
            );
        }
        assert!(
            from_session.keys().any(|c| c.starts_with("rgb")),
            "the session sent the repainting window no rgb: {from_session:?}"
        );
    } else {
        eprintln!(
            "note: transcoding off (TRANSCODE in tests/interop_video.rs): the h264 and \
             rgb-only assertions were not made"
        );
    }
    drop(xfwd_log);
    assert!(xfwd.alive(), "xfwd must keep serving");
}

#[test]
fn parsers_read_xpra_313_lines() {
    let d = parse_draw(
        "2026-12-02 01:24:22,531 process_draw:    3234    bytes for window   2, sequence        \
         4,  640x480  at    0,0    using   h264 encoding with options={b'frame': 0, b'csc': \
         b'YUV444P', b'window-size': (640, 480)}",
    )
    .unwrap();
    assert_eq!(
        d,
        Draw {
            wid: 2,
            w: 640,
            h: 480,
            x: 0,
            y: 0,
            coding: "h264".into()
        }
    );
    assert_eq!(
        painted(
            "2026-12-02 01:24:22,537 record_decode_time(True, ) wid=2, b'h264': 640x480, 5.0ms\n\
             x record_decode_time(False, oops) wid=2, b'h264': 640x480\n",
            2,
            "h264"
        ),
        1
    );
    let info: BTreeMap<String, String> = [
        ("client.window.2.total_frames.rgb24", "9"),
        ("client.window.2.total_frames.webp", "1"),
        ("client.window.2.total_pixels.rgb24", "702"),
        ("client.1.window.2.total_frames.rgb24", "1"),
        ("windows.2.title", "xfwd-repaint"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(wid_of(&info, "xfwd-repaint"), Some(2));
    let f = frames_sent(&info, 2);
    assert_eq!(f.get("rgb24"), Some(&10));
    assert_eq!(f.get("webp"), Some(&1));
    assert_eq!(
        tuple_items("('h264', 'vp9', 'rgb')"),
        vec!["h264", "vp9", "rgb"]
    );
}
