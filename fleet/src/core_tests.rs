//! The fleet state machine driven with stepped time.

use super::*;
use crate::snapshot::Snapshot;
use zgate_limiter::{Metric, Moments};

fn p(i: u8) -> IpPrefix {
    IpPrefix::host([192, 0, 2, i].into())
}

fn from(origin: &str, event: Event) -> Envelope {
    Envelope {
        origin: origin.into(),
        event,
    }
}

fn block(i: u8, expires_ms: u64) -> Event {
    Event::Block {
        prefix: p(i),
        expires_ms,
        reason: None,
    }
}

fn connected(name: &str) -> Fleet {
    let mut f = Fleet::new(name, 100, Timing::default());
    assert_eq!(f.resync(Resync::default(), 0), vec![]);
    f
}

fn snapshot(n: u64) -> Box<Snapshot> {
    let mut moments = [Moments::default(); Metric::COUNT];
    (0..n).for_each(|x| moments[0].add(x));
    Box::new(Snapshot {
        moments,
        histograms: Default::default(),
        last: true,
    })
}

#[test]
fn local_blocks_are_published_and_remote_ones_applied_not_echoed() {
    let mut a = connected("a");
    let local = Local::Block {
        prefix: p(1),
        expires_ms: 5_000,
        reason: None,
    };
    assert_eq!(
        a.local(local, 1_000),
        vec![Action::Publish(block(1, 5_000))]
    );
    // Its own event coming back on the stream does nothing.
    assert_eq!(a.remote(from("a", block(1, 5_000)), 1_000, 1_001), vec![]);
    let applied = a.remote(from("b", block(2, 9_000)), 1_000, 1_030);
    assert_eq!(
        applied,
        vec![Action::ApplyBlock {
            prefix: p(2),
            expires_ms: 9_000,
            reason: None
        }]
    );
    assert_eq!(a.lag_ms(), 30);
    // An expired block is not applied; an unblock is.
    assert_eq!(a.remote(from("b", block(3, 1_000)), 900, 1_040), vec![]);
    let unblock = Event::Unblock { prefix: p(2) };
    assert_eq!(
        a.remote(from("b", unblock), 1_050, 1_060),
        vec![Action::ApplyUnblock { prefix: p(2) }]
    );
}

#[test]
fn while_disconnected_changes_wait_and_replay_with_their_expiry() {
    let mut a = connected("a");
    let local = |i, x| Local::Block {
        prefix: p(i),
        expires_ms: x,
        reason: None,
    };
    // The publish failed: the event waits, and the state change is news once.
    assert!(a.publish_failed(block(1, 10_000)));
    assert!(!a.disconnected());
    assert_eq!(a.local(local(2, 3_000), 1_000), vec![]);
    assert_eq!(a.local(local(3, 20_000), 1_000), vec![]);
    assert_eq!(a.outbox().len(), 3);
    // Reconnected at 5 s: 192.0.2.2 expired meanwhile and is not replayed.
    let out = a.resync(Resync::default(), 5_000);
    assert_eq!(
        out,
        vec![
            Action::Publish(block(1, 10_000)),
            Action::Publish(block(3, 20_000))
        ]
    );
    assert!(a.is_connected() && a.outbox().is_empty());
}

#[test]
fn resync_applies_the_list_and_removes_fleet_blocks_that_are_gone() {
    let mut a = connected("a");
    a.remote(from("b", block(1, 50_000)), 0, 10);
    a.remote(from("b", block(2, 50_000)), 0, 10);
    a.disconnected();
    // A local block made while down must survive the resync even though Redis lacks it.
    let local = Local::Block {
        prefix: p(4),
        expires_ms: 60_000,
        reason: None,
    };
    a.local(local, 100);
    let state = Resync {
        blocks: vec![(p(2), 50_000), (p(3), 40_000), (p(5), 10)],
        training: None,
        model: Some(4),
        fresh: false,
    };
    let out = a.resync(state, 1_000);
    assert_eq!(
        out,
        vec![
            Action::ApplyBlock {
                prefix: p(3),
                expires_ms: 40_000,
                reason: None
            },
            Action::ApplyUnblock { prefix: p(1) },
            Action::ImportModel { epoch: 4 },
            Action::Publish(block(4, 60_000)),
        ]
    );
}

#[test]
fn training_is_started_and_ended_fleet_wide_and_the_model_built_once_settled() {
    let mut a = connected("a");
    let mut b = connected("b");
    assert_eq!(
        a.local(Local::TrainingStarted, 0),
        vec![Action::AssignEpoch]
    );
    a.epoch_assigned(7, 0);
    let start = from("a", Event::TrainingStarted { epoch: 7 });
    assert_eq!(
        b.remote(start.clone(), 0, 5),
        vec![Action::StartTraining { epoch: 7 }]
    );
    assert_eq!(b.remote(start, 0, 6), vec![], "a repeat is ignored");
    // Live snapshots every second while training.
    assert_eq!(b.tick(500), vec![]);
    let live = Action::PublishSnapshot {
        epoch: 7,
        snapshot: None,
    };
    assert_eq!(b.tick(1_005), vec![live.clone()]);
    assert_eq!(a.tick(1_000), vec![live]);
    // A ends training: its final snapshot, then the event.
    let ended = Local::TrainingEnded {
        mode: Mode::Defence,
        snapshot: snapshot(3),
    };
    let out = a.local(ended, 2_000);
    assert_eq!(
        out,
        vec![
            Action::PublishSnapshot {
                epoch: 7,
                snapshot: Some(snapshot(3))
            },
            Action::Publish(Event::TrainingEnded {
                epoch: 7,
                mode: Mode::Defence
            }),
        ]
    );
    let end = from(
        "a",
        Event::TrainingEnded {
            epoch: 7,
            mode: Mode::Defence,
        },
    );
    assert_eq!(
        b.remote(end, 2_000, 2_002),
        vec![Action::EndTraining {
            epoch: 7,
            mode: Mode::Defence
        }]
    );
    // No more live snapshots; the build comes a settle later, once.
    assert_eq!(b.tick(2_500), vec![]);
    assert_eq!(a.tick(3_000), vec![Action::BuildModel { epoch: 7 }]);
    assert_eq!(b.tick(3_002), vec![Action::BuildModel { epoch: 7 }]);
    assert_eq!(b.tick(9_000), vec![]);
    a.model_imported(7);
    let model = from("b", Event::Model { epoch: 7 });
    assert_eq!(a.remote(model, 3_002, 3_003), vec![]);
}

#[test]
fn training_while_disconnected_stays_local_and_resync_joins_the_fleet() {
    let mut a = Fleet::new("a", 10, Timing::default());
    assert_eq!(a.local(Local::TrainingStarted, 0), vec![]);
    let ended = Local::TrainingEnded {
        mode: Mode::Monitor,
        snapshot: snapshot(1),
    };
    assert_eq!(a.local(ended, 10), vec![]);
    assert!(!a.publish_failed(Event::TrainingStarted { epoch: 1 }));
    assert_eq!(a.outbox().len(), 0, "training events are not queued");
    let state = Resync {
        training: Some((3, true, Mode::Defence)),
        ..Resync::default()
    };
    assert_eq!(
        a.resync(state, 20),
        vec![Action::StartTraining { epoch: 3 }]
    );
    // Reconnecting after the fleet ended epoch 3 ends it here too.
    a.disconnected();
    let state = Resync {
        training: Some((3, false, Mode::Monitor)),
        ..Resync::default()
    };
    assert_eq!(
        a.resync(state, 30),
        vec![Action::EndTraining {
            epoch: 3,
            mode: Mode::Monitor
        }]
    );
}

#[test]
fn a_redis_that_lost_its_data_gets_the_fleets_blocks_again() {
    let mut a = connected("a");
    a.remote(from("b", block(1, 50_000)), 0, 10);
    a.disconnected();
    let state = Resync {
        fresh: true,
        ..Resync::default()
    };
    assert_eq!(
        a.resync(state, 1_000),
        vec![Action::Publish(block(1, 50_000))]
    );
    // Still known: a later ordinary resync without it removes it.
    a.disconnected();
    assert_eq!(
        a.resync(Resync::default(), 2_000),
        vec![Action::ApplyUnblock { prefix: p(1) }]
    );
}
