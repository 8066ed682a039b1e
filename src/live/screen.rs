//! The live view in a terminal: redrawn in place, with keys. `q` or Ctrl-C
//! quits (the same clean stop as a signal), ↑/↓ move through the list, Tab
//! or `v` switches between the top leads, the dormant pool and the owners.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style, Stylize as _},
    text::Line,
    widgets::{Block, Cell, Paragraph, Row, Table, TableState},
};

use super::board::{Board, Counters, LeadRow, Rates, View, sim_day};
use crate::simulate::Progress;

/// What the user asked for with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    Quit,
    Up,
    Down,
    NextView,
    None,
}

/// The action a key stands for.
pub fn action(key: crossterm::event::KeyEvent) -> KeyAction {
    use crossterm::event::{KeyCode, KeyEventKind, KeyModifiers};
    if key.kind == KeyEventKind::Release {
        return KeyAction::None;
    }
    match key.code {
        KeyCode::Char('q') | KeyCode::Esc => KeyAction::Quit,
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => KeyAction::Quit,
        KeyCode::Up | KeyCode::Char('k') => KeyAction::Up,
        KeyCode::Down | KeyCode::Char('j') => KeyAction::Down,
        KeyCode::Tab | KeyCode::Char('v') => KeyAction::NextView,
        _ => KeyAction::None,
    }
}

/// The view's own state: which list, which row.
#[derive(Debug)]
pub struct Screen {
    pub view: View,
    pub table: TableState,
    /// Label and address of every endpoint the quickstart serves.
    pub urls: Vec<(String, String)>,
}

impl Screen {
    pub fn new(urls: Vec<(String, String)>) -> Self {
        Self {
            view: View::Top,
            table: TableState::default().with_selected(Some(0)),
            urls,
        }
    }

    pub fn apply(&mut self, action: KeyAction) {
        match action {
            KeyAction::Up => self.table.select_previous(),
            KeyAction::Down => self.table.select_next(),
            KeyAction::NextView => {
                self.view = self.view.next();
                self.table.select(Some(0));
            }
            KeyAction::Quit | KeyAction::None => {}
        }
    }

    /// Draws one frame.
    pub fn draw(
        &mut self,
        frame: &mut Frame<'_>,
        board: &Board,
        counters: &Counters,
        rates: &Rates,
        progress: &Progress,
        secs: f64,
    ) {
        let [title, stats, list, urls, help] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(7),
            Constraint::Min(5),
            Constraint::Length(self.urls.len() as u16 + 2),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        frame.render_widget(
            Line::from(format!(
                " leadstream quickstart · {secs:.0}s · simulated {} · {} people · {} leads",
                sim_day(progress.sim_ms),
                progress.people,
                board.leads()
            ))
            .bold(),
            title,
        );
        self.draw_stats(frame, stats, board, counters, rates);
        let rows = board.rows(self.view);
        if let Some(i) = self.table.selected()
            && i >= rows.len()
        {
            self.table.select(Some(rows.len().saturating_sub(1)));
        }
        self.draw_list(frame, list, &rows);
        let url_lines: Vec<Line<'_>> = self
            .urls
            .iter()
            .map(|(label, url)| Line::from(format!("{label:<22} {url}")))
            .collect();
        frame.render_widget(
            Paragraph::new(url_lines).block(Block::bordered().title(" endpoints ")),
            urls,
        );
        frame.render_widget(
            Line::from(" q quit · ↑/↓ move · Tab switch list (top by score, dormant pool, owners)")
                .dim(),
            help,
        );
    }

    fn draw_stats(
        &self,
        frame: &mut Frame<'_>,
        area: Rect,
        board: &Board,
        counters: &Counters,
        rates: &Rates,
    ) {
        let [rate_area, lag_area, mix_area] = Layout::horizontal([
            Constraint::Percentage(34),
            Constraint::Percentage(28),
            Constraint::Percentage(38),
        ])
        .areas(area);
        let rate_lines = vec![
            Line::from(format!(
                "events in    {:>8.0}/s {:>10.0}",
                rates.events_in, counters.events_in
            )),
            Line::from(format!(
                "rejects      {:>8.0}/s {:>10.0}",
                rates.rejects, counters.rejects
            )),
            Line::from(format!(
                "scores out   {:>8.0}/s {:>10.0}",
                rates.scores_out, counters.scores_out
            )),
            Line::from(format!(
                "rows written {:>8.0}/s {:>10.0}",
                rates.rows_written, counters.rows_written
            )),
        ];
        frame.render_widget(
            Paragraph::new(rate_lines).block(Block::bordered().title(" rates · totals ")),
            rate_area,
        );
        let lag_lines: Vec<Line<'_>> = counters
            .lags
            .iter()
            .map(|(stage, lag)| Line::from(format!("{stage:<18} {lag:>8.0}")))
            .collect();
        frame.render_widget(
            Paragraph::new(lag_lines).block(Block::bordered().title(" lag (records) ")),
            lag_area,
        );
        let mix = |key: &str| -> String {
            board
                .mix(key)
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(" · ")
        };
        frame.render_widget(
            Paragraph::new(vec![
                Line::from(format!("grades  {}", mix("grade"))),
                Line::from(format!("stages  {}", mix("stage"))),
            ])
            .wrap(ratatui::widgets::Wrap { trim: true })
            .block(Block::bordered().title(" mix ")),
            mix_area,
        );
    }

    fn draw_list(&mut self, frame: &mut Frame<'_>, area: Rect, rows: &[LeadRow]) {
        let header = Row::new([
            "lead",
            "score",
            "grade",
            "stage",
            "wake",
            "reasons",
            "platforms",
            "persona",
        ])
        .style(Style::new().add_modifier(Modifier::BOLD));
        let body = rows.iter().map(|r| {
            Row::new([
                Cell::from(r.lead_id.clone()),
                Cell::from(format!("{:>5.1}", r.score)),
                Cell::from(r.grade.clone()),
                Cell::from(r.stage.clone()),
                Cell::from(if r.reactivated { "yes" } else { "" }),
                Cell::from(r.reasons.join(",")),
                Cell::from(r.platforms.join(",")),
                Cell::from(r.persona.clone()),
            ])
        });
        let table = Table::new(
            body,
            [
                Constraint::Length(18),
                Constraint::Length(5),
                Constraint::Length(6),
                Constraint::Length(9),
                Constraint::Length(4),
                Constraint::Fill(3),
                Constraint::Fill(2),
                Constraint::Fill(2),
            ],
        )
        .header(header)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .block(Block::bordered().title(format!(
            " {} · {} leads ",
            self.view.title(),
            rows.len()
        )));
        frame.render_stateful_widget(table, area, &mut self.table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::{Terminal, backend::TestBackend};
    use serde_json::json;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn keys_map_to_actions() {
        assert_eq!(action(key(KeyCode::Char('q'))), KeyAction::Quit);
        assert_eq!(
            action(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            KeyAction::Quit
        );
        assert_eq!(action(key(KeyCode::Char('c'))), KeyAction::None);
        assert_eq!(action(key(KeyCode::Down)), KeyAction::Down);
        assert_eq!(action(key(KeyCode::Tab)), KeyAction::NextView);
    }

    /// A frame shows the leads of the chosen list, the mix and the endpoints.
    #[test]
    fn a_frame_shows_the_list_it_is_switched_to() {
        let mut board = Board::default();
        for (lead, score, stage) in [
            ("L-hot", 90.0, "new"),
            ("L-sleepy", 40.0, "dormant"),
            ("L-owner", 30.0, "retained"),
        ] {
            board.apply(
                json!({"lead_id": lead, "score": score, "grade": "high", "stage": stage,
                "merged_into": null, "reasons": [{"code": "price_checked"}], "platforms": ["web"]}),
            );
        }
        let mut screen = Screen::new(vec![("ingest".into(), "http://127.0.0.1:8080".into())]);
        let mut terminal = Terminal::new(TestBackend::new(120, 30)).unwrap();
        let mut text = |screen: &mut Screen| -> String {
            terminal
                .draw(|f| {
                    screen.draw(
                        f,
                        &board,
                        &Counters::default(),
                        &Rates::default(),
                        &Progress::default(),
                        3.0,
                    )
                })
                .unwrap();
            let buffer = terminal.backend().buffer();
            buffer
                .content()
                .chunks(buffer.area.width as usize)
                .map(|row| row.iter().map(|c| c.symbol()).collect::<String>() + "\n")
                .collect()
        };
        let top = text(&mut screen);
        assert!(top.contains("top by score · 3 leads"), "{top}");
        assert!(top.contains("L-hot") && top.contains("L-owner"), "{top}");
        assert!(top.contains("price_checked"), "{top}");
        assert!(top.contains("http://127.0.0.1:8080"), "{top}");
        assert!(
            top.contains("stages  dormant 1 · new 1 · retained 1"),
            "{top}"
        );
        screen.apply(KeyAction::NextView);
        let dormant = text(&mut screen);
        assert!(dormant.contains("dormant pool · 1 leads"), "{dormant}");
        assert!(
            dormant.contains("L-sleepy") && !dormant.contains("L-hot"),
            "{dormant}"
        );
    }
}
