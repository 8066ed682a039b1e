//! The quickstart's live view of the scores as they arrive. In a terminal
//! it redraws in place ([`screen`]); in a pipe or a log it prints one plain
//! status line per interval. Either way it returns the latest score of
//! every lead when stopped, for the quickstart's final check.

mod board;
mod screen;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use leadstream_common::kafka::{consumer_config, partition_count};
use leadstream_schemas::{Decoder, HttpResolver, codec::to_json};
use rdkafka::{
    Message,
    consumer::{Consumer, StreamConsumer},
};
use tokio::sync::{Notify, mpsc, watch};

pub use board::Board;
use board::{Counters, Rates};
use screen::{KeyAction, Screen};

use crate::simulate::{self, Progress};

/// Where the scores are and what else the view shows.
pub struct LiveInputs {
    pub kafka: String,
    pub registry: String,
    pub scores_topic: String,
    pub truth: Arc<Mutex<Vec<simulate::Truth>>>,
    pub progress: watch::Receiver<Progress>,
    pub stop: watch::Receiver<bool>,
    /// Notified when the user quits from the terminal view.
    pub quit: Arc<Notify>,
    /// Label and address of every endpoint the quickstart serves.
    pub urls: Vec<(String, String)>,
    /// Redraw in place (a terminal) rather than print lines.
    pub terminal: bool,
}

/// How often a plain status line is printed.
const PLAIN_EVERY: Duration = Duration::from_secs(3);
/// How often the terminal view is redrawn (keys redraw at once).
const REDRAW_EVERY: Duration = Duration::from_millis(250);

/// Follows the scores topic until stopped.
pub async fn run(inputs: LiveInputs) -> Board {
    let mut board = Board::default();
    let mut stop = inputs.stop.clone();
    let Some((consumer, decoder)) = follow(&inputs, &mut stop).await else {
        return board;
    };
    let started = Instant::now();
    let mut people_seen = 0;
    let mut terminal = inputs
        .terminal
        .then(|| TerminalView::enter(inputs.urls.clone()));
    let mut tick = tokio::time::interval(if terminal.is_some() {
        REDRAW_EVERY
    } else {
        PLAIN_EVERY
    });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last = (Counters::default(), Instant::now());
    let mut rates = Rates::default();
    loop {
        let key = async {
            match terminal.as_mut() {
                Some(t) => t.keys.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // The borrow wait_for returns is not Send: dropped in here.
            () = async { let _ = stop.wait_for(|s| *s).await; } => break,
            m = consumer.recv() => {
                if let Ok(m) = m
                    && let Some(payload) = m.payload()
                    && let Ok(d) = decoder.decode(payload).await
                {
                    board.apply(to_json(&d.value));
                }
            }
            Some(key) = key => {
                let Some(t) = terminal.as_mut() else { continue };
                match screen::action(key) {
                    KeyAction::Quit => inputs.quit.notify_one(),
                    a => {
                        t.screen.apply(a);
                        t.draw(&board, &last.0, &rates, &inputs.progress.borrow(), started);
                    }
                }
            }
            _ = tick.tick() => {
                people_seen = learn_personas(&mut board, &inputs.truth, people_seen);
                let progress = inputs.progress.borrow().clone();
                match terminal.as_mut() {
                    Some(t) => {
                        if last.1.elapsed() >= Duration::from_secs(1) {
                            let now = Counters::parse(&leadstream_common::ops::prometheus().render());
                            rates = Rates::between(&last.0, &now, last.1.elapsed().as_secs_f64());
                            last = (now, Instant::now());
                        }
                        t.draw(&board, &last.0, &rates, &progress, started);
                    }
                    None => println!("{}", board.status_line(started.elapsed().as_secs_f64(), &progress)),
                }
            }
        }
    }
    drop(terminal);
    board
}

/// Subscribes to the scores topic once the scorer has created it; None when
/// stopped first or the broker or registry cannot be used.
async fn follow(
    inputs: &LiveInputs,
    stop: &mut watch::Receiver<bool>,
) -> Option<(StreamConsumer, Decoder)> {
    let resolver = HttpResolver::new(&inputs.registry).ok()?;
    let decoder = Decoder::new(Arc::new(resolver));
    let group = format!("leadstream-quickstart-view-{}", std::process::id());
    let consumer: StreamConsumer = consumer_config(&inputs.kafka, &group).create().ok()?;
    while tokio::task::block_in_place(|| partition_count(&inputs.kafka, &inputs.scores_topic))
        .is_err()
    {
        if *stop.borrow() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    consumer.subscribe(&[&inputs.scores_topic]).ok()?;
    Some((consumer, decoder))
}

/// Adds the personas of people the simulator brought in since `seen`.
fn learn_personas(board: &mut Board, truth: &Mutex<Vec<simulate::Truth>>, seen: usize) -> usize {
    let t = truth.lock().expect("truth lock");
    for person in t.iter().skip(seen) {
        for lead in &person.lead_ids {
            board.set_persona(lead, person.persona.as_str());
        }
    }
    t.len()
}

/// The terminal while the view owns it: raw mode and the alternate screen,
/// given back (also on a panic, by ratatui's hook) when dropped.
struct TerminalView {
    terminal: ratatui::DefaultTerminal,
    screen: Screen,
    keys: mpsc::UnboundedReceiver<crossterm::event::KeyEvent>,
    reading: Arc<AtomicBool>,
}

impl TerminalView {
    fn enter(urls: Vec<(String, String)>) -> Self {
        let terminal = ratatui::init();
        let (tx, keys) = mpsc::unbounded_channel();
        let reading = Arc::new(AtomicBool::new(true));
        let still = Arc::clone(&reading);
        // Raw mode turns Ctrl-C into a key, read here like any other.
        std::thread::spawn(move || {
            use crossterm::event::{Event, poll, read};
            while still.load(Ordering::Relaxed) {
                match poll(Duration::from_millis(100)) {
                    Ok(true) => {
                        if let Ok(Event::Key(k)) = read()
                            && tx.send(k).is_err()
                        {
                            return;
                        }
                    }
                    Ok(false) => {}
                    Err(_) => return,
                }
            }
        });
        Self {
            terminal,
            screen: Screen::new(urls),
            keys,
            reading,
        }
    }

    fn draw(
        &mut self,
        board: &Board,
        counters: &Counters,
        rates: &Rates,
        progress: &Progress,
        started: Instant,
    ) {
        let secs = started.elapsed().as_secs_f64();
        let screen = &mut self.screen;
        let _ = self
            .terminal
            .draw(|f| screen.draw(f, board, counters, rates, progress, secs));
    }
}

impl Drop for TerminalView {
    fn drop(&mut self) {
        self.reading.store(false, Ordering::Relaxed);
        ratatui::restore();
    }
}
