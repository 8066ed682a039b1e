//! The README's main command, headless: `leadstream quickstart` runs every
//! role for a bounded time, the simulator's events get scored, and the
//! sink's rows land (here as export files, so the test needs no ClickHouse).

use std::{net::TcpListener, process::Command};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn quickstart_scores_simulated_leads_and_writes_rows_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let out = Command::new(env!("CARGO_BIN_EXE_leadstream"))
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
        ])
        .args(["--dir", dir.path().to_str().unwrap()])
        .args(["--broker-listen", &addr(free_port())])
        .args(["--registry-listen", &addr(free_port())])
        .args(["--ingest-listen", &addr(free_port())])
        .args(["--scorer-listen", &addr(free_port())])
        .args(["--sink-listen", &addr(free_port())])
        .env("LEADSTREAM_LOG", "warn")
        .output()
        .expect("run leadstream quickstart");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "quickstart failed: {}\n{stdout}\n{stderr}",
        out.status
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
