//! Consumer lag as a gauge.

/// Records the consumer's lag (records on its assigned partitions not yet
/// consumed) as a gauge, at most once per `every`: it asks the broker for
/// each partition's high watermark, so it is not for every batch. Several
/// consumers of one stage in a process (stream threads) share the series:
/// each adds the change since its own last report, so the gauge is their sum.
pub struct LagGauge {
    name: &'static str,
    label: (&'static str, &'static str),
    every: std::time::Duration,
    next: std::sync::Mutex<(std::time::Instant, f64)>,
}

impl LagGauge {
    pub fn new(name: &'static str, label: (&'static str, &'static str)) -> Self {
        Self {
            name,
            label,
            every: std::time::Duration::from_secs(10),
            next: std::sync::Mutex::new((std::time::Instant::now(), 0.0)),
        }
    }

    pub fn maybe_record<C>(&self, consumer: &rdkafka::consumer::StreamConsumer<C>)
    where
        C: rdkafka::consumer::ConsumerContext + 'static,
    {
        {
            let next = self.next.lock().expect("lag gauge lock");
            if std::time::Instant::now() < next.0 {
                return;
            }
        }
        let lag = tokio::task::block_in_place(|| consumer_lag(consumer));
        let mut next = self.next.lock().expect("lag gauge lock");
        next.0 = std::time::Instant::now() + self.every;
        if let Some(lag) = lag {
            let lag = lag as f64;
            metrics::gauge!(self.name, self.label.0 => self.label.1).increment(lag - next.1);
            next.1 = lag;
        }
    }
}

/// Sum over the assigned partitions of high watermark minus position; None
/// when the broker does not answer. Partitions not fetched from yet (no
/// position) are left out.
fn consumer_lag<C>(consumer: &rdkafka::consumer::StreamConsumer<C>) -> Option<i64>
where
    C: rdkafka::consumer::ConsumerContext + 'static,
{
    use rdkafka::{Offset, consumer::Consumer};
    let position = consumer.position().ok()?;
    let mut lag = 0;
    for e in position.elements() {
        let Offset::Offset(pos) = e.offset() else {
            continue;
        };
        let (_, high) = consumer
            .fetch_watermarks(e.topic(), e.partition(), std::time::Duration::from_secs(2))
            .ok()?;
        lag += (high - pos).max(0);
    }
    Some(lag)
}
