//! Posting simulated calls to ingest: the history batch and the
//! continuous live mode, and the truth file beside them.

use super::*;

pub fn write_key(platform: &str) -> &'static str {
    match platform {
        "app" => "dev-app-key",
        "mini_program" => "dev-mp-key",
        "server" => "dev-server-key",
        "offline" => "dev-offline-key",
        _ => "dev-web-key",
    }
}

/// What the simulator has posted so far.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    pub posted: u64,
    pub rejected: u64,
    /// Simulated time of the newest call posted.
    pub sim_ms: i64,
    pub people: u64,
}

/// Posts calls to ingest in Segment batches per source.
pub struct Poster {
    client: reqwest::Client,
    url: String,
    pub progress: Progress,
}

impl Poster {
    pub fn new(url: &str) -> Self {
        Self {
            client: reqwest::Client::new(),
            url: format!("{}/v1/batch", url.trim_end_matches('/')),
            progress: Progress::default(),
        }
    }

    pub async fn post(&mut self, calls: &[(i64, &'static str, Json)]) -> anyhow::Result<()> {
        let mut by_source: BTreeMap<&str, Vec<&Json>> = BTreeMap::new();
        for (t, platform, body) in calls {
            by_source.entry(platform).or_default().push(body);
            self.progress.sim_ms = self.progress.sim_ms.max(*t);
        }
        for (platform, batch) in by_source {
            for chunk in batch.chunks(500) {
                let resp = self
                    .client
                    .post(&self.url)
                    .basic_auth(write_key(platform), Some(""))
                    .json(&json!({"batch": chunk}))
                    .send()
                    .await
                    .with_context(|| format!("posting to {}", self.url))?;
                let status = resp.status();
                let body: Json = resp.json().await.unwrap_or(Json::Null);
                anyhow::ensure!(status.is_success(), "ingest answered {status}: {body}");
                self.progress.posted += chunk.len() as u64;
                self.progress.rejected += body
                    .get("rejected")
                    .and_then(Json::as_array)
                    .map_or(0, |r| r.len() as u64);
            }
        }
        Ok(())
    }
}

/// One line of the truth file.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    pub persona: Persona,
    pub lead_id: String,
    pub lead_ids: Vec<String>,
    pub intent: f64,
    pub first_ms: i64,
    pub order_ms: Option<i64>,
    pub intent_shown_ms: Option<i64>,
}

impl Truth {
    pub fn of(p: &Person) -> Self {
        Self {
            persona: p.persona,
            lead_id: p.lead_id.clone(),
            lead_ids: p.lead_ids.clone(),
            intent: p.intent,
            first_ms: p.first_ms,
            order_ms: p.order_ms,
            intent_shown_ms: p.intent_shown_ms,
        }
    }

    fn to_line(&self) -> String {
        json!({"persona": self.persona.as_str(), "lead_id": self.lead_id, "lead_ids": self.lead_ids, "intent": (self.intent * 1000.0).round() / 1000.0,
               "first_ms": self.first_ms, "order_ms": self.order_ms, "intent_shown_ms": self.intent_shown_ms})
        .to_string()
    }
}

pub fn write_truth(path: &PathBuf, truth: &[Truth]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let text: String = truth.iter().map(|t| t.to_line() + "\n").collect();
    std::fs::write(path, text).with_context(|| format!("writing the truth to {}", path.display()))
}

/// Posts `args.leads` people's history ending now, in time order at
/// `args.rate`; writes the truth first. The batch mode of `simulate`.
pub async fn run_history(args: &SimulateArgs) -> anyhow::Result<(Vec<Truth>, i64, Progress)> {
    let end_ms = chrono::Utc::now().timestamp_millis();
    let people = people(args, end_ms);
    let truth: Vec<Truth> = people.iter().map(Truth::of).collect();
    write_truth(&args.truth, &truth)?;
    let mut all: Vec<(i64, &'static str, Json)> = people
        .into_iter()
        .flat_map(|p| p.calls)
        .filter(|c| c.0 <= end_ms)
        .collect();
    all.sort_by_key(|c| c.0);
    let mut poster = Poster::new(&args.url);
    let chunk = ((args.rate / 5.0).ceil() as usize).clamp(1, 500);
    let started = tokio::time::Instant::now();
    for window in all.chunks(chunk) {
        poster.post(window).await?;
        let due =
            started + Duration::from_secs_f64(poster.progress.posted as f64 / args.rate.max(1.0));
        tokio::time::sleep_until(due).await;
    }
    Ok((truth, end_ms, poster.progress))
}

/// The continuous mode (quickstart): people keep arriving in simulated time
/// so that about `rate` events a second are posted, each call when the
/// clock passes it, until `stop`. At most `cap` people when given.
pub struct Live {
    pub seed: u64,
    pub rate: f64,
    pub cap: Option<usize>,
    pub truth: Arc<Mutex<Vec<Truth>>>,
}

impl Live {
    pub async fn run(
        &self,
        url: &str,
        clock: Arc<dyn Clock>,
        progress: tokio::sync::watch::Sender<Progress>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        const TICK: Duration = Duration::from_millis(200);
        let mut poster = Poster::new(url);
        let mut pending: BinaryHeap<Reverse<(i64, u64)>> = BinaryHeap::new();
        let mut bodies: HashMap<u64, (&'static str, Json)> = HashMap::new();
        let mut seq = 0u64;
        let mut budget = 0.0f64;
        let mut mean_calls = 12.0f64;
        let mut last = clock.now_ms();
        let mut next_person = 0usize;
        let mut rng = Rng(self.seed ^ 0x5eed);
        let mut ticker = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return Ok(());
            }
            let now = clock.now_ms();
            // Arrivals: the events they will post, over their journeys,
            // match the rate once the first journeys have run their course.
            budget += self.rate * TICK.as_secs_f64();
            while budget > 0.0 && self.cap.is_none_or(|c| next_person < c) {
                let start = last + rng.below((now - last).max(1) as u64) as i64;
                let p = person(self.seed, next_person, start);
                next_person += 1;
                mean_calls = 0.98 * mean_calls + 0.02 * p.calls.len() as f64;
                budget -= mean_calls;
                self.truth.lock().expect("truth lock").push(Truth::of(&p));
                for (t, platform, body) in p.calls {
                    seq += 1;
                    bodies.insert(seq, (platform, body));
                    pending.push(Reverse((t, seq)));
                }
            }
            budget = budget.min(self.rate);
            last = now;
            let mut due = Vec::new();
            while let Some(Reverse((t, id))) = pending.peek().copied()
                && t <= now
            {
                pending.pop();
                if let Some((platform, body)) = bodies.remove(&id) {
                    due.push((t, platform, body));
                }
            }
            poster.post(&due).await?;
            poster.progress.sim_ms = now;
            poster.progress.people = next_person as u64;
            progress.send_replace(poster.progress.clone());
        }
    }
}
