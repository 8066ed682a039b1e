//! The README's main command, headless: `leadstream quickstart` runs every
//! role for a bounded time, the simulator's events get scored, and the
//! sink's rows land (here as export files, so the test needs no ClickHouse).

mod common;

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

/// A free port below Linux's ephemeral range (32768 and up), which the
/// kernel never gives an outgoing connection as its source port: the port
/// stays free until the quickstart binds it, seconds later, even while the
/// other test's Kafka clients open connection after connection. (Port 0
/// came from that range, and once lost that race.)
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + start.wrapping_add(n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

#[test]
fn quickstart_scores_simulated_leads_and_writes_rows_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let ops = [addr(free_port()), addr(free_port()), addr(free_port())];
    let child = Command::new(env!("CARGO_BIN_EXE_leadstream"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "quickstart",
            "--no-clickhouse",
            "--duration-secs",
            "90",
            "--leads",
            "40",
            "--rate",
            "100",
            // Three simulated days a second: leads that go quiet turn
            // dormant within the run.
            "--speed",
            "3",
        ])
        .args(["--dir", dir.path().to_str().unwrap()])
        .args(["--broker-listen", &addr(free_port())])
        .args(["--registry-listen", &addr(free_port())])
        .args(["--ingest-listen", &ops[0]])
        .args(["--scorer-listen", &ops[1]])
        .args(["--sink-listen", &ops[2]])
        .env("LEADSTREAM_LOG", "warn")
        // Files, not pipes: nobody reads a pipe while the test polls /metrics.
        .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .expect("run leadstream quickstart");
    let mut child = common::KilledOnDrop(child);

    // While it runs, every series the Prometheus dashboard queries must be
    // on some role's /metrics: a renamed metric breaks a panel here.
    let wanted = dashboard_series();
    let deadline = Instant::now() + Duration::from_secs(80);
    let missing = loop {
        std::thread::sleep(Duration::from_secs(5));
        let exposed: String = ops.iter().map(|a| scrape(a)).collect();
        let missing: BTreeSet<&String> = wanted
            .iter()
            .filter(|m| {
                !exposed.lines().any(|l| {
                    l.strip_prefix(m.as_str())
                        .is_some_and(|r| r.starts_with(['{', ' ']))
                })
            })
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
    };
    let status = child.0.wait().unwrap();
    let stdout = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(
        status.success(),
        "quickstart failed: {status}\n{stdout}\n{stderr}"
    );
    // A clean stop: roles close their clients before the broker goes.
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(
        errors.is_empty(),
        "ERROR lines in a clean run and stop:\n{}",
        errors.join("\n")
    );
    let leads: usize = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("scores seen: ")?
                .strip_suffix(" leads")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no score summary in:\n{stdout}"));
    assert!(leads >= 5, "only {leads} leads scored:\n{stdout}");
    assert!(stdout.contains("ranking check over"), "{stdout}");
    // The simulator kept posting until stopped, and time moved stages.
    let status_lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("──")).collect();
    assert!(
        status_lines.len() >= 20,
        "the live view stopped early:\n{stdout}"
    );
    let posted = |l: &str| -> u64 {
        l.split("events posted ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let n = status_lines.len();
    assert!(
        posted(status_lines[n - 1]) > posted(status_lines[n / 2]),
        "events stopped flowing:\n{stdout}"
    );
    assert!(
        status_lines.iter().any(|l| l.contains("dormant ")),
        "no lead went dormant during the run:\n{stdout}"
    );
    assert!(
        missing.is_empty(),
        "pipeline-health dashboard queries series no role exposes: {missing:?}"
    );
    // Each role reported its per-minute metrics, and the sink wrote them.
    let metrics = std::fs::read_to_string(dir.path().join("export/pipeline_metrics.jsonl"))
        .unwrap_or_default();
    let accepted: f64 = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| {
            r["metric"]
                .as_str()
                .is_some_and(|m| m.starts_with("ingest_events_accepted_total"))
        })
        .filter_map(|r| r["value"].as_f64())
        .sum();
    assert!(
        accepted > 0.0,
        "no accepted-events minute in pipeline_metrics:\n{metrics}"
    );
    for table in ["events", "lead_scores", "lead_score_history"] {
        let path = dir.path().join("export").join(format!("{table}.jsonl"));
        let rows = std::fs::read_to_string(&path).unwrap_or_default();
        let first = rows
            .lines()
            .next()
            .unwrap_or_else(|| panic!("{} is empty:\n{stdout}", path.display()));
        serde_json::from_str::<serde_json::Value>(first).expect("JSONEachRow");
    }
}

/// The leadstream series the pipeline-health dashboard's PromQL names.
fn dashboard_series() -> BTreeSet<String> {
    let d: serde_json::Value = serde_json::from_str(include_str!(
        "../deploy/grafana/dashboards/pipeline-health.json"
    ))
    .unwrap();
    let mut names = BTreeSet::new();
    for panel in d["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let Some(expr) = t["expr"].as_str() else {
                continue;
            };
            for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if ["ingest_", "scorer_", "sink_"]
                    .iter()
                    .any(|p| token.starts_with(p))
                {
                    names.insert(token.to_owned());
                }
            }
        }
    }
    assert!(names.len() >= 15, "{names:?}");
    names
}

/// GET /metrics over a bare socket; empty when the role is not up yet.
fn scrape(addr: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

/// In a terminal the live view redraws in place: a pseudo-terminal, read
/// through a terminal emulator, shows scored leads in the list, Tab
/// switches the list, and `q` stops everything cleanly (exit 0, the final
/// check printed once the terminal is given back).
#[test]
fn in_a_terminal_the_live_view_redraws_and_q_quits() {
    use expectrl::Session;

    let dir = tempfile::tempdir().unwrap();
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leadstream"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "quickstart",
            "--no-clickhouse",
            "--leads",
            "30",
            "--rate",
            "100",
            "--speed",
            "3",
            // A backstop only: the test quits with `q` long before.
            "--duration-secs",
            "240",
        ])
        .args(["--dir", dir.path().to_str().unwrap()])
        .args(["--broker-listen", &addr(free_port())])
        .args(["--registry-listen", &addr(free_port())])
        .args(["--ingest-listen", &addr(free_port())])
        .args(["--scorer-listen", &addr(free_port())])
        .args(["--sink-listen", &addr(free_port())])
        .env("LEADSTREAM_LOG", "warn");
    let (cols, rows) = (140, 40);
    let mut session = Session::spawn(cmd).expect("spawn the quickstart in a pseudo-terminal");
    session
        .get_process_mut()
        .set_window_size(cols, rows)
        .unwrap();
    let mut term = Screen {
        parser: vt100::Parser::new(rows, cols, 0),
        output: Vec::new(),
    };
    // Lead ids are `L` and 16 hex digits.
    let lead_id = |s: &str| {
        s.match_indices('L')
            .any(|(i, _)| s[i + 1..].bytes().take_while(u8::is_ascii_hexdigit).count() >= 16)
    };
    let top = term.until(&mut session, "a scored lead in the top list", |s| {
        s.contains("top by score ·") && lead_id(s)
    });
    assert!(top.contains("events in"), "{top}");
    assert!(top.contains("endpoints"), "{top}");
    session.send("\t").unwrap();
    term.until(&mut session, "the dormant pool after Tab", |s| {
        s.contains("dormant pool ·") && !s.contains("top by score ·")
    });
    session.send("q").unwrap();
    // Keep reading while it stops, so its writes to the terminal never block.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        term.read(&mut session);
        match session.get_process().status().unwrap() {
            expectrl::WaitStatus::StillAlive => {}
            exited => break exited,
        }
        assert!(Instant::now() < deadline, "still running 60 s after q");
        std::thread::sleep(Duration::from_millis(100));
    };
    term.read(&mut session);
    let printed = String::from_utf8_lossy(&term.output).into_owned();
    assert_eq!(
        status,
        expectrl::WaitStatus::Exited(session.get_process().pid(), 0),
        "q must stop the quickstart cleanly:\n{printed}"
    );
    assert!(
        printed.contains("ranking check over"),
        "the final check is printed after the view:\n{printed}"
    );
    let log = std::fs::read_to_string(dir.path().join("quickstart.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    if let Some(first) = lines.iter().position(|l| l.contains(" ERROR ")) {
        // What led up to it says which client or role it came from.
        panic!(
            "ERROR lines in the log, from 30 lines before the first:\n{}",
            lines[first.saturating_sub(30)..].join("\n")
        );
    }
}

/// What a pseudo-terminal showed: the screen as a terminal draws it, and
/// every byte written.
struct Screen {
    parser: vt100::Parser,
    output: Vec<u8>,
}

impl Screen {
    /// Reads what is there without waiting.
    fn read(&mut self, session: &mut expectrl::Session) {
        let mut buf = [0u8; 64 * 1024];
        while let Ok(n) = session.try_read(&mut buf) {
            if n == 0 {
                break;
            }
            self.parser.process(&buf[..n]);
            self.output.extend_from_slice(&buf[..n]);
        }
    }

    /// The screen's text once `done` holds, within two minutes.
    fn until(
        &mut self,
        session: &mut expectrl::Session,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            self.read(session);
            let text = self.parser.screen().contents();
            if done(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "no {what} on screen:\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
