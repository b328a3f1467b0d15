//! Playing the journeys: the six personas on their own schedules, or load mode's synthetic
//! sessions at a fixed rate, each emission sent to the stream, the pushers and the narration.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{LISTED_SESSIONS, Narration, Shared};
use crate::clock;
use crate::demo::config::SimulateConfig;
use crate::demo::personas::{self, Emission, Journey, Persona, Timebase};
use crate::demo::posthog::PosthogSession;

/// Where each emission goes: the stream hub, the webhook pushers, the narration.
pub(super) struct Sinks {
    pub(super) shared: Arc<Shared>,
    pub(super) pushers: Vec<mpsc::Sender<Bytes>>,
    pub(super) narration: Option<mpsc::Sender<Narration>>,
    /// With `--push-format posthog`: what posthog-js remembers in each session's tab.
    pub(super) posthog: Option<HashMap<usize, PosthogSession>>,
}

impl Sinks {
    /// Send one emission of `persona` (number `slot` on the board).
    fn emit(&mut self, slot: usize, persona: &Persona, emission: &Emission, time: &Timebase) {
        let json = emission.to_json(time);
        let counters = &self.shared.counters;
        counters.emitted.fetch_add(1, Ordering::Relaxed);
        counters
            .actions
            .fetch_add(emission.action_count() as u64, Ordering::Relaxed);
        self.shared
            .hub
            .publish(&Bytes::from(format!("data: {json}\n\n")));
        if !self.pushers.is_empty() {
            let worker = slot % self.pushers.len();
            let bodies = match self.posthog.as_mut() {
                None => vec![Bytes::from(json)],
                Some(sessions) => sessions
                    .entry(slot)
                    .or_insert_with(|| PosthogSession::new(persona))
                    .events(persona, emission, time)
                    .iter()
                    .map(|event| Bytes::from(event.to_string()))
                    .collect(),
            };
            for body in bodies {
                self.push(worker, body);
            }
        }
        let at = time.unix(emission.at);
        if slot < LISTED_SESSIONS {
            let mut board = crate::sync::lock(&self.shared.board);
            if let Some(status) = board.get_mut(slot) {
                status.events += 1;
                status.last_event_at = Some(at);
                if let Some(page) = emission.current_page() {
                    status.current_page = Some(page);
                }
            }
        }
        if let Some(narration) = &self.narration {
            for line in &emission.narration {
                let _ = narration.try_send(Narration {
                    at,
                    persona: persona.name.clone(),
                    line: line.clone(),
                });
            }
        }
    }

    /// Queue one webhook delivery on `worker` (never waits: a full queue drops and counts).
    fn push(&self, worker: usize, body: Bytes) {
        if self.pushers[worker].try_send(body).is_err() {
            let dropped = self
                .shared
                .counters
                .push_dropped
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "webhook deliveries are falling behind: deliveries dropped"
                );
            }
        }
    }
}

/// Play the six personas in real time (scaled by the speed), each on its own schedule.
pub(super) async fn drive_personas(
    config: &SimulateConfig,
    mut sinks: Sinks,
    deadline: Option<tokio::time::Instant>,
    shutdown: &CancellationToken,
) {
    let origin_wall = clock::now();
    let origin = tokio::time::Instant::now();
    let mut journeys: Vec<Journey> = personas::cast(config.seed, &config.product_id)
        .into_iter()
        .map(|p| Journey::new(p, config.seed))
        .collect();
    let mut upcoming: Vec<Emission> = journeys.iter_mut().map(Journey::next_emission).collect();
    loop {
        let Some((slot, at)) = upcoming
            .iter()
            .enumerate()
            .map(|(i, e)| (i, e.at))
            .min_by(|a, b| a.1.total_cmp(&b.1))
        else {
            return;
        };
        let due = origin + Duration::from_secs_f64(at / config.speed);
        if deadline.is_some_and(|d| due > d) {
            wait_until(deadline, shutdown).await;
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            () = shutdown.cancelled() => return,
        }
        let emission = std::mem::replace(&mut upcoming[slot], journeys[slot].next_emission());
        let time = Timebase {
            not_after: Some(clock::now()),
            ..Timebase::new(origin_wall, config.speed)
        };
        sinks.emit(slot, journeys[slot].persona(), &emission, &time);
    }
}

/// Load mode: `sessions` synthetic sessions take turns, `rate` payloads a second in total.
pub(super) async fn drive_load(
    config: &SimulateConfig,
    mut sinks: Sinks,
    deadline: Option<tokio::time::Instant>,
    shutdown: &CancellationToken,
) {
    let sessions = config.sessions.max(1);
    let mut journeys: Vec<Journey> = (0..sessions)
        .map(|i| {
            Journey::new(
                personas::synthetic(config.seed, i, &config.product_id),
                config.seed,
            )
        })
        .collect();
    // Each session gets rate/sessions turns a second and a turn covers a few seconds of its
    // journey, so journey time runs about as fast as real time; stamps never pass "now".
    let speed = (config.rate / sessions as f64 * 6.0).max(0.001);
    let origin_wall = clock::now();
    let start = tokio::time::Instant::now();
    let burst_cap = (config.rate / 10.0).ceil().max(1.0) as u64;
    let mut sent: u64 = 0;
    let mut cursor = 0usize;
    let mut behind_warned = false;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let now = tokio::time::Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return;
        }
        let due = ((now - start).as_secs_f64() * config.rate) as u64;
        let mut owed = due.saturating_sub(sent);
        if owed > burst_cap * 10 {
            if !behind_warned {
                tracing::warn!(
                    rate = config.rate,
                    "cannot keep up with --rate on this machine; sending as fast as possible"
                );
                behind_warned = true;
            }
            sent = due - burst_cap;
            owed = burst_cap;
        }
        let time = Timebase {
            not_after: Some(clock::now()),
            ..Timebase::new(origin_wall, speed)
        };
        for n in 0..owed.min(burst_cap) {
            let emission = journeys[cursor].next_emission();
            sinks.emit(cursor, journeys[cursor].persona(), &emission, &time);
            cursor = (cursor + 1) % journeys.len();
            sent += 1;
            if n % 256 == 255 {
                tokio::task::yield_now().await;
            }
        }
    }
}

pub(super) async fn wait_until(
    deadline: Option<tokio::time::Instant>,
    shutdown: &CancellationToken,
) {
    match deadline {
        Some(d) => {
            tokio::select! {
                () = tokio::time::sleep_until(d) => {}
                () = shutdown.cancelled() => {}
            }
        }
        None => shutdown.cancelled().await,
    }
}
