//! The call's state machine, sans-IO: user actions, relay events and media progress go in; what
//! the IO side must do (relay requests, start or stop the media session) and the new state come
//! out of [`CallMachine::poll_output`]. Mutate, then drain until `None`.
//!
//! Invariants (checked by the tests below):
//! - At most one call at a time: a second incoming call while busy is declined
//!   ([`RelayRequest::Decline`]) and leaves the current call untouched; `invite` while busy fails.
//! - The media session runs only between `StartMedia` and `StopMedia`; `StopMedia` is emitted
//!   only from `Connecting`/`Active`, and before it the relay is told (so the other side hears
//!   "hung up", not a dropped connection).
//! - The caller offers (`StartMedia { we_offer: true }` on `call_accepted`); the callee starts its
//!   media only once the relay confirmed the accept.
//! - `Ended` behaves like `Idle` for a new call; it keeps the reason for the UI.

use std::collections::VecDeque;

use hum_proto::signal::{CallEndReason, Event};
use hum_proto::{CallId, UserId};

use super::{CallError, CallPeer, CallState, EndReason};

/// A request the IO side sends to the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayRequest {
    /// `call_invite`; feed the reply to [`CallMachine::invited`] / [`CallMachine::invite_failed`].
    Invite(UserId),
    /// `call_accept`; feed the reply to [`CallMachine::accept_confirmed`] /
    /// [`CallMachine::accept_failed`].
    Accept(CallId),
    Decline(CallId),
    Cancel(CallId),
    HangUp(CallId),
}

/// What the machine asks of the IO side, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum CallOutput {
    Relay(RelayRequest),
    /// Open devices and start the call's media session with `peer` (the caller offers).
    StartMedia {
        call: CallId,
        peer: UserId,
        we_offer: bool,
    },
    /// Stop the media session (after the relay was told, if it was us).
    StopMedia,
    /// The state changed to this.
    Changed(CallState),
}

/// One 1-on-1 call's life. See the module doc for the invariants.
#[derive(Debug, Default)]
pub struct CallMachine {
    state: CallState,
    out: VecDeque<CallOutput>,
}

impl CallMachine {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn state(&self) -> &CallState {
        &self.state
    }

    /// The next thing to do, oldest first.
    pub fn poll_output(&mut self) -> Option<CallOutput> {
        self.out.pop_front()
    }

    /// Whether a call is in progress (ringing either way, connecting or active).
    pub fn is_busy(&self) -> bool {
        !matches!(self.state, CallState::Idle | CallState::Ended { .. })
    }

    fn set(&mut self, state: CallState) {
        self.state = state;
        self.out.push_back(CallOutput::Changed(self.state.clone()));
    }

    fn end(&mut self, reason: EndReason) {
        let media = matches!(
            self.state,
            CallState::Connecting { .. } | CallState::Active { .. }
        );
        let peer = self.state.peer().cloned();
        if media {
            self.out.push_back(CallOutput::StopMedia);
        }
        self.set(CallState::Ended { peer, reason });
    }

    /// I call `peer`. The relay request follows; its reply goes to [`Self::invited`].
    pub fn invite(&mut self, peer: CallPeer) -> Result<(), CallError> {
        if self.is_busy() {
            return Err(CallError::Busy);
        }
        let id = peer.id;
        self.set(CallState::Outgoing { peer, call: None });
        self.out
            .push_back(CallOutput::Relay(RelayRequest::Invite(id)));
        Ok(())
    }

    /// The relay gave my invite its id.
    pub fn invited(&mut self, call: CallId) {
        match &mut self.state {
            CallState::Outgoing { call: c @ None, .. } => {
                *c = Some(call);
                self.out.push_back(CallOutput::Changed(self.state.clone()));
            }
            // Already accepted (the accept raced the reply): nothing new.
            CallState::Outgoing { call: Some(c), .. }
            | CallState::Connecting { call: c, .. }
            | CallState::Active { call: c, .. }
                if *c == call => {}
            // I cancelled before the relay answered: withdraw it now.
            _ => self
                .out
                .push_back(CallOutput::Relay(RelayRequest::Cancel(call))),
        }
    }

    /// The relay refused my invite.
    pub fn invite_failed(&mut self, error: &CallError) {
        if let CallState::Outgoing { call: None, .. } = self.state {
            self.end(EndReason::Failed(error.to_string()));
        }
    }

    /// I accept the ringing call.
    pub fn accept(&mut self) -> Result<(), CallError> {
        let CallState::Incoming { peer, call } = &self.state else {
            return Err(CallError::NothingToAccept);
        };
        let (peer, call) = (peer.clone(), *call);
        self.set(CallState::Connecting { peer, call });
        self.out
            .push_back(CallOutput::Relay(RelayRequest::Accept(call)));
        Ok(())
    }

    /// The relay took my accept: the caller will offer now, so start listening.
    pub fn accept_confirmed(&mut self, call: CallId) {
        if let CallState::Connecting { peer, call: c } = &self.state
            && *c == call
        {
            self.out.push_back(CallOutput::StartMedia {
                call,
                peer: peer.id,
                we_offer: false,
            });
        }
    }

    /// The relay refused my accept (the caller gave up first...).
    pub fn accept_failed(&mut self, call: CallId, error: &CallError) {
        if matches!(self.state, CallState::Connecting { call: c, .. } if c == call) {
            // No media runs yet: only the state changes.
            let peer = self.state.peer().cloned();
            self.set(CallState::Ended {
                peer,
                reason: EndReason::Failed(error.to_string()),
            });
        }
    }

    /// I decline the ringing call.
    pub fn decline(&mut self) -> Result<(), CallError> {
        let CallState::Incoming { call, .. } = self.state else {
            return Err(CallError::NothingToDecline);
        };
        self.end(EndReason::Declined);
        self.out
            .push_back(CallOutput::Relay(RelayRequest::Decline(call)));
        Ok(())
    }

    /// I withdraw my call before it is answered.
    pub fn cancel(&mut self) -> Result<(), CallError> {
        let CallState::Outgoing { call, .. } = self.state else {
            return Err(CallError::NothingToCancel);
        };
        self.end(EndReason::Cancelled);
        // Without an id yet, `invited` withdraws it when the reply comes.
        if let Some(call) = call {
            self.out
                .push_back(CallOutput::Relay(RelayRequest::Cancel(call)));
        }
        Ok(())
    }

    /// I hang up (or cancel a call still ringing on their side). A ringing incoming call is
    /// declined with [`Self::decline`]; without a call this does nothing.
    pub fn hang_up(&mut self) -> Result<(), CallError> {
        match self.state {
            CallState::Outgoing { .. } => self.cancel(),
            CallState::Connecting { call, .. } | CallState::Active { call, .. } => {
                // Relay first, then stop media (whose goodbye would otherwise arrive first).
                self.out
                    .push_back(CallOutput::Relay(RelayRequest::HangUp(call)));
                self.end(EndReason::HungUp);
                Ok(())
            }
            CallState::Incoming { .. } => Err(CallError::NothingToHangUp),
            CallState::Idle | CallState::Ended { .. } => Ok(()),
        }
    }

    /// The media path to the peer is up.
    pub fn media_connected(&mut self) {
        if let CallState::Connecting { peer, call } = &self.state {
            let (peer, call) = (peer.clone(), *call);
            self.set(CallState::Active {
                peer,
                call,
                peer_speaking: false,
            });
        }
    }

    /// The media session could not start: hang up and say why.
    pub fn media_failed(&mut self, why: &str) {
        if let CallState::Connecting { call, .. } | CallState::Active { call, .. } = self.state {
            self.out
                .push_back(CallOutput::Relay(RelayRequest::HangUp(call)));
            self.end(EndReason::Failed(format!("Call failed: {why}")));
        }
    }

    /// The peer started or stopped talking.
    pub fn peer_speaking(&mut self, speaking: bool) {
        if let CallState::Active { peer_speaking, .. } = &mut self.state
            && *peer_speaking != speaking
        {
            *peer_speaking = speaking;
            self.out.push_back(CallOutput::Changed(self.state.clone()));
        }
    }

    /// The relay connection dropped: the relay ends calls of a disconnected user.
    pub fn connection_lost(&mut self) {
        if self.is_busy() {
            self.end(EndReason::RelayLost);
        }
    }

    /// A relay event (everything else than calls is ignored).
    pub fn on_relay(&mut self, ev: &Event) {
        match ev {
            Event::CallIncoming { call, from } => {
                if self.is_busy() {
                    // One call at a time.
                    self.out
                        .push_back(CallOutput::Relay(RelayRequest::Decline(*call)));
                    return;
                }
                self.set(CallState::Incoming {
                    peer: CallPeer {
                        id: from.id,
                        name: from.display_name.to_string(),
                    },
                    call: *call,
                });
            }
            Event::CallAccepted { call, by } => {
                let CallState::Outgoing { peer, call: mine } = &self.state else {
                    return;
                };
                // The accept can race the invite's reply: then it is ours if it is from them.
                let ours = *mine == Some(*call) || (mine.is_none() && peer.id == *by);
                if !ours {
                    return;
                }
                let peer = peer.clone();
                let id = peer.id;
                self.set(CallState::Connecting { peer, call: *call });
                self.out.push_back(CallOutput::StartMedia {
                    call: *call,
                    peer: id,
                    we_offer: true,
                });
            }
            Event::CallEnded { call, reason } if self.state.call() == Some(*call) => {
                let incoming = matches!(self.state, CallState::Incoming { .. });
                let reason = match reason {
                    CallEndReason::Declined => EndReason::TheyDeclined,
                    CallEndReason::Cancelled => EndReason::TheyCancelled,
                    CallEndReason::HungUp => EndReason::TheyHungUp,
                    CallEndReason::Disconnected => EndReason::TheyDisconnected,
                    CallEndReason::Timeout if incoming => EndReason::Missed,
                    CallEndReason::Timeout => EndReason::NoAnswer,
                };
                self.end(reason);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hum_proto::signal::{DisplayName, UserSummary};

    fn bob() -> CallPeer {
        CallPeer {
            id: UserId([0xb0; 32]),
            name: "Bob".into(),
        }
    }

    fn bob_summary() -> UserSummary {
        UserSummary {
            id: bob().id,
            display_name: DisplayName::new("Bob").expect("name"),
        }
    }

    fn drain(m: &mut CallMachine) -> Vec<CallOutput> {
        std::iter::from_fn(|| m.poll_output()).collect()
    }

    /// Only the IO requests, without the state changes.
    fn io(m: &mut CallMachine) -> Vec<CallOutput> {
        drain(m)
            .into_iter()
            .filter(|o| !matches!(o, CallOutput::Changed(_)))
            .collect()
    }

    fn ended(m: &CallMachine) -> Option<EndReason> {
        match m.state() {
            CallState::Ended { reason, .. } => Some(reason.clone()),
            _ => None,
        }
    }

    #[test]
    fn outgoing_call_rings_connects_and_ends_when_they_hang_up() {
        let mut m = CallMachine::new();
        m.invite(bob()).expect("idle");
        assert_eq!(
            drain(&mut m),
            [
                CallOutput::Changed(CallState::Outgoing {
                    peer: bob(),
                    call: None
                }),
                CallOutput::Relay(RelayRequest::Invite(bob().id)),
            ]
        );
        assert!(matches!(m.invite(bob()), Err(CallError::Busy)));
        m.invited(CallId(4));
        assert_eq!(m.state().call(), Some(CallId(4)));
        assert_eq!(io(&mut m), []);
        m.on_relay(&Event::CallAccepted {
            call: CallId(4),
            by: bob().id,
        });
        assert_eq!(
            io(&mut m),
            [CallOutput::StartMedia {
                call: CallId(4),
                peer: bob().id,
                we_offer: true
            }]
        );
        assert!(matches!(m.state(), CallState::Connecting { .. }));
        m.peer_speaking(true);
        assert_eq!(drain(&mut m), [], "not active yet");
        m.media_connected();
        assert!(matches!(m.state(), CallState::Active { .. }));
        drain(&mut m);
        m.peer_speaking(true);
        assert!(matches!(
            m.state(),
            CallState::Active {
                peer_speaking: true,
                ..
            }
        ));
        assert_eq!(drain(&mut m).len(), 1);
        m.peer_speaking(true);
        assert_eq!(drain(&mut m), [], "no change, no output");
        // Someone else's call ending changes nothing.
        m.on_relay(&Event::CallEnded {
            call: CallId(9),
            reason: CallEndReason::HungUp,
        });
        assert_eq!(drain(&mut m), []);
        m.on_relay(&Event::CallEnded {
            call: CallId(4),
            reason: CallEndReason::HungUp,
        });
        assert_eq!(io(&mut m), [CallOutput::StopMedia]);
        assert_eq!(ended(&m), Some(EndReason::TheyHungUp));
        assert_eq!(
            m.state().peer().map(|p| p.name.as_str()),
            Some("Bob"),
            "the ended state keeps who it was with"
        );
        assert_eq!(
            EndReason::TheyHungUp.sentence("Bob").as_deref(),
            Some("Bob hung up.")
        );
        // Ended is idle for a new call.
        m.invite(bob()).expect("a new call after the last ended");
    }

    #[test]
    fn an_accept_racing_the_invite_reply_is_still_ours() {
        let mut m = CallMachine::new();
        m.invite(bob()).expect("idle");
        drain(&mut m);
        m.on_relay(&Event::CallAccepted {
            call: CallId(2),
            by: bob().id,
        });
        assert!(matches!(io(&mut m)[..], [CallOutput::StartMedia { .. }]));
        m.invited(CallId(2));
        assert_eq!(drain(&mut m), [], "the late reply is the same call");
        assert_eq!(m.state().call(), Some(CallId(2)));
        // An accept from someone else for a call id we never had is not ours.
        let mut m = CallMachine::new();
        m.invite(bob()).expect("idle");
        drain(&mut m);
        m.on_relay(&Event::CallAccepted {
            call: CallId(3),
            by: UserId([1; 32]),
        });
        assert_eq!(drain(&mut m), []);
        assert!(matches!(m.state(), CallState::Outgoing { .. }));
    }

    #[test]
    fn cancelling_before_the_relay_replied_withdraws_the_call_when_it_does() {
        let mut m = CallMachine::new();
        m.invite(bob()).expect("idle");
        drain(&mut m);
        m.hang_up().expect("cancel");
        assert_eq!(ended(&m), Some(EndReason::Cancelled));
        assert_eq!(io(&mut m), [], "no id to cancel yet, no media to stop");
        m.invited(CallId(6));
        assert_eq!(
            io(&mut m),
            [CallOutput::Relay(RelayRequest::Cancel(CallId(6)))]
        );
        // With an id, cancel goes straight to the relay.
        m.invite(bob()).expect("idle again");
        m.invited(CallId(7));
        drain(&mut m);
        m.cancel().expect("ringing");
        assert_eq!(
            io(&mut m),
            [CallOutput::Relay(RelayRequest::Cancel(CallId(7)))]
        );
        assert!(matches!(m.cancel(), Err(CallError::NothingToCancel)));
        assert_eq!(m.hang_up().ok(), Some(()), "nothing to hang up is fine");
    }

    #[test]
    fn incoming_call_accept_decline_and_busy() {
        let mut m = CallMachine::new();
        assert!(matches!(m.accept(), Err(CallError::NothingToAccept)));
        let ring = Event::CallIncoming {
            call: CallId(7),
            from: bob_summary(),
        };
        m.on_relay(&ring);
        assert_eq!(
            drain(&mut m),
            [CallOutput::Changed(CallState::Incoming {
                peer: bob(),
                call: CallId(7)
            })]
        );
        // A second caller while this one rings is declined; this call stays.
        m.on_relay(&Event::CallIncoming {
            call: CallId(8),
            from: UserSummary {
                id: UserId([2; 32]),
                display_name: DisplayName::new("Cy").expect("name"),
            },
        });
        assert_eq!(
            drain(&mut m),
            [CallOutput::Relay(RelayRequest::Decline(CallId(8)))]
        );
        assert!(matches!(m.hang_up(), Err(CallError::NothingToHangUp)));
        m.accept().expect("rings");
        assert_eq!(
            io(&mut m),
            [CallOutput::Relay(RelayRequest::Accept(CallId(7)))]
        );
        assert!(matches!(m.state(), CallState::Connecting { .. }));
        // Media starts only once the relay took the accept.
        m.accept_confirmed(CallId(7));
        assert_eq!(
            io(&mut m),
            [CallOutput::StartMedia {
                call: CallId(7),
                peer: bob().id,
                we_offer: false
            }]
        );
        assert!(matches!(m.decline(), Err(CallError::NothingToDecline)));
        m.hang_up().expect("connecting");
        assert_eq!(
            io(&mut m),
            [
                CallOutput::Relay(RelayRequest::HangUp(CallId(7))),
                CallOutput::StopMedia
            ],
            "the relay hears it before the media says goodbye"
        );
        assert_eq!(ended(&m), Some(EndReason::HungUp));
        assert_eq!(
            EndReason::HungUp.sentence("Bob").as_deref(),
            Some("You hung up.")
        );

        let mut m = CallMachine::new();
        m.on_relay(&ring);
        drain(&mut m);
        m.decline().expect("rings");
        assert_eq!(
            io(&mut m),
            [CallOutput::Relay(RelayRequest::Decline(CallId(7)))]
        );
        assert_eq!(ended(&m), Some(EndReason::Declined));
        assert_eq!(
            EndReason::Declined.sentence("Bob"),
            None,
            "nothing to explain"
        );
    }

    #[test]
    fn a_refused_accept_or_invite_ends_without_media() {
        let mut m = CallMachine::new();
        m.on_relay(&Event::CallIncoming {
            call: CallId(3),
            from: bob_summary(),
        });
        m.accept().expect("rings");
        drain(&mut m);
        m.accept_failed(CallId(3), &CallError::Unreachable { name: "Bob".into() });
        assert_eq!(io(&mut m), [], "no media ran");
        assert!(matches!(ended(&m), Some(EndReason::Failed(_))));
        m.accept_confirmed(CallId(3));
        assert_eq!(io(&mut m), [], "a late confirmation starts nothing");

        let mut m = CallMachine::new();
        m.invite(bob()).expect("idle");
        drain(&mut m);
        m.invite_failed(&CallError::NotFriend);
        assert_eq!(
            ended(&m),
            Some(EndReason::Failed(CallError::NotFriend.to_string()))
        );
        assert_eq!(io(&mut m), []);
    }

    #[test]
    fn media_failure_hangs_up_and_says_why() {
        let mut m = CallMachine::new();
        m.invite(bob()).expect("idle");
        m.invited(CallId(5));
        m.on_relay(&Event::CallAccepted {
            call: CallId(5),
            by: bob().id,
        });
        drain(&mut m);
        m.media_failed("no audio device");
        assert_eq!(
            io(&mut m),
            [
                CallOutput::Relay(RelayRequest::HangUp(CallId(5))),
                CallOutput::StopMedia
            ]
        );
        assert_eq!(
            ended(&m).and_then(|r| r.sentence("Bob")).as_deref(),
            Some("Call failed: no audio device")
        );
    }

    #[test]
    fn end_reasons_read_well_from_each_side() {
        let ended_with = |setup: &dyn Fn(&mut CallMachine), reason| {
            let mut m = CallMachine::new();
            setup(&mut m);
            m.on_relay(&Event::CallEnded {
                call: CallId(5),
                reason,
            });
            ended(&m)
                .and_then(|r| r.sentence("Bob"))
                .unwrap_or_default()
        };
        let ringing_me = |m: &mut CallMachine| {
            m.on_relay(&Event::CallIncoming {
                call: CallId(5),
                from: bob_summary(),
            });
        };
        let calling_bob = |m: &mut CallMachine| {
            m.invite(bob()).expect("idle");
            m.invited(CallId(5));
        };
        assert_eq!(
            ended_with(&ringing_me, CallEndReason::Cancelled),
            "Missed call from Bob."
        );
        assert_eq!(
            ended_with(&ringing_me, CallEndReason::Timeout),
            "Missed call from Bob."
        );
        assert_eq!(
            ended_with(&calling_bob, CallEndReason::Timeout),
            "No answer from Bob."
        );
        assert_eq!(
            ended_with(&calling_bob, CallEndReason::Declined),
            "Bob declined the call."
        );
        assert_eq!(
            ended_with(&calling_bob, CallEndReason::Disconnected),
            "Bob disconnected."
        );
        assert_eq!(
            EndReason::Cancelled.sentence("Bob").as_deref(),
            Some("Call cancelled.")
        );
    }

    #[test]
    fn losing_the_relay_ends_the_call() {
        let mut m = CallMachine::new();
        m.connection_lost();
        assert_eq!(drain(&mut m), [], "idle: nothing to end");
        m.invite(bob()).expect("idle");
        drain(&mut m);
        m.connection_lost();
        assert_eq!(io(&mut m), [], "ringing: no media to stop");
        assert_eq!(ended(&m), Some(EndReason::RelayLost));
        assert!(
            EndReason::RelayLost
                .sentence("Bob")
                .is_some_and(|s| s.contains("relay was lost"))
        );
        // In a call: media stops.
        m.on_relay(&Event::CallIncoming {
            call: CallId(1),
            from: bob_summary(),
        });
        m.accept().expect("rings");
        m.accept_confirmed(CallId(1));
        m.media_connected();
        drain(&mut m);
        m.connection_lost();
        assert_eq!(io(&mut m), [CallOutput::StopMedia]);
    }
}
