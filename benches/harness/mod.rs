//! What the benches against real services share: they run only under
//! `cargo bench`, read their knobs from the environment, and say how to
//! start a missing service.
#![allow(dead_code)] // each bench uses a different subset

/// False when built and run as a test target by `cargo build/test
/// --all-targets`: only `cargo bench` (which passes `--bench`) runs them.
pub fn under_cargo_bench() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Logs at `LEADSTREAM_LOG` (default warn).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEADSTREAM_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
}

/// A knob: `name` from the environment, else `default`.
pub fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

/// Kafka bootstrap servers: `LEADSTREAM_BENCH_KAFKA`, else the test suite's.
pub fn kafka() -> String {
    std::env::var("LEADSTREAM_BENCH_KAFKA")
        .or_else(|_| std::env::var("LEADSTREAM_TEST_KAFKA"))
        .expect("set LEADSTREAM_BENCH_KAFKA to a broker, e.g. one started by deploy/scripts/services.sh")
}

/// ClickHouse HTTP URL: `LEADSTREAM_BENCH_CLICKHOUSE`, else the test suite's.
pub fn clickhouse() -> String {
    std::env::var("LEADSTREAM_BENCH_CLICKHOUSE")
        .or_else(|_| std::env::var("LEADSTREAM_TEST_CLICKHOUSE"))
        .expect("set LEADSTREAM_BENCH_CLICKHOUSE to a ClickHouse HTTP URL, e.g. one started by deploy/scripts/services.sh")
}

/// The `p` quantile of sorted samples (nearest rank); zero when empty.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
