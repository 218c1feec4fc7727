//! The key agent of one member in one room: which sealed keys to send to whom, and when our
//! own key changes. Sans-IO: membership changes, received keys and the time are inputs; sealed
//! keys to send are outputs; the [`KeyRing`] it shares with the media engine is updated in place.
//!
//! - On joining, a member knows nobody's key. Everyone already there sees it join (the relay's
//!   `roster_join`) and sends it their key; it answers each first key from someone it did not
//!   know yet with its own ([`KeyAgent::receive`]). So nobody needs the initial roster, and a
//!   member whose roster is late still ends up with everyone's key.
//! - When a member leaves, everyone still present makes a fresh key (the next epoch), sends it
//!   to the others only, and switches to it [`ROTATION_DELAY`] later, so receivers hold the new
//!   key before the first frame that needs it. The one who left keeps only old keys: nothing
//!   sent after the switch decrypts for it. Its keys are dropped at once on our side.
//! - Someone joining while a rotation is pending gets both the current and the next key.
//! - After our relay link dropped and we re-joined ([`KeyAgent::rejoined`]), the others saw us
//!   leave (they rotated and dropped our keys) and join again: we hand our keys to everyone in the
//!   re-joined roster at once, and treat members missing from it as gone (we missed their
//!   `roster_leave`), which rotates our key.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hum_proto::{ChannelId, Nonce, UserId};
use rand::RngCore;
use rand::rngs::StdRng;

use crate::frame::KeyRing;
use crate::seal::{LocalKeys, SealedKey};
use crate::{E2eeError, SenderKey};

/// Between handing out a new key and encrypting with it. Loopback delivers a key through the
/// relay in milliseconds, a far-away member in a few hundred; until the switch, a member who
/// just left could still decrypt (for at most this long).
pub const ROTATION_DELAY: Duration = Duration::from_secs(1);

/// A sealed key to send through the relay (the `e2ee_key` signal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub to: UserId,
    pub key: SealedKey,
}

pub struct KeyAgent {
    me: LocalKeys,
    channel: ChannelId,
    ring: Arc<KeyRing>,
    current: SenderKey,
    /// Handed out, switched to at the instant.
    next: Option<(SenderKey, Instant)>,
    /// The other members we give keys to.
    members: BTreeSet<UserId>,
    rng: StdRng,
}

impl std::fmt::Debug for KeyAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAgent")
            .field("channel", &self.channel)
            .field("epoch", &self.current.epoch)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

impl KeyAgent {
    /// A fresh agent with a random first key (epoch 1). `rng` must be a cryptographic one seeded
    /// from the OS (`StdRng::from_entropy()`); tests seed it.
    pub fn new(me: LocalKeys, channel: ChannelId, mut rng: StdRng) -> Result<Self, E2eeError> {
        let current = SenderKey::random(1, &mut rng);
        let ring = Arc::new(KeyRing::new(&current)?);
        Ok(Self {
            me,
            channel,
            ring,
            current,
            next: None,
            members: BTreeSet::new(),
            rng,
        })
    }

    /// The key ring the media engine encrypts and decrypts with.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.clone()
    }

    pub fn me(&self) -> UserId {
        self.me.user_id()
    }

    /// The epoch we encrypt with now.
    pub fn epoch(&self) -> u32 {
        self.current.epoch
    }

    pub fn members(&self) -> &BTreeSet<UserId> {
        &self.members
    }

    fn seal_for(&mut self, to: UserId, key: &SenderKey) -> Option<Outgoing> {
        let mut salt = [0u8; 32];
        self.rng.fill_bytes(&mut salt);
        // Fails only for a `to` that is not a usable key: such a member gets nothing.
        let key = self.me.seal(&to, self.channel, key, Nonce(salt)).ok()?;
        Some(Outgoing { to, key })
    }

    /// The keys `to` needs from us: the current one, and the next if a rotation is pending.
    fn keys_for(&mut self, to: UserId) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let current = self.current.clone();
        out.extend(self.seal_for(to, &current));
        if let Some((next, _)) = self.next.clone() {
            out.extend(self.seal_for(to, &next));
        }
        out
    }

    /// `user` is in the room now (the relay's roster). Nothing if we knew.
    pub fn member_joined(&mut self, user: UserId) -> Vec<Outgoing> {
        if user == self.me() || !self.members.insert(user) {
            return Vec::new();
        }
        self.keys_for(user)
    }

    /// `user` left: forget its keys, make the next key and give it to everyone still here.
    pub fn member_left(&mut self, user: &UserId, now: Instant) -> Vec<Outgoing> {
        self.ring.remove(user);
        if !self.members.remove(user) {
            return Vec::new();
        }
        let epoch = self
            .next
            .as_ref()
            .map_or(self.current.epoch, |(k, _)| k.epoch)
            .wrapping_add(1);
        let next = SenderKey::random(epoch, &mut self.rng);
        let mut out = Vec::new();
        for to in self.members.clone() {
            out.extend(self.seal_for(to, &next));
        }
        // Nobody left to wait for: switch now.
        let at = if self.members.is_empty() {
            now
        } else {
            now + ROTATION_DELAY
        };
        self.next = Some((next, at));
        self.handle_timeout(now);
        out
    }

    /// We are in the room again after our link to the relay dropped, with `roster` (the relay's
    /// answer to the re-join; may include us). Everyone there gets our keys now (they dropped
    /// them when they saw us leave); whoever we knew and is not there left while we were away:
    /// their keys go and ours rotate, as for [`KeyAgent::member_left`].
    pub fn rejoined(
        &mut self,
        roster: impl IntoIterator<Item = UserId>,
        now: Instant,
    ) -> Vec<Outgoing> {
        let me = self.me();
        let here: BTreeSet<UserId> = roster.into_iter().filter(|u| *u != me).collect();
        let gone: Vec<UserId> = self.members.difference(&here).copied().collect();
        for u in &gone {
            // Its output (the next key for those still here) is covered by `keys_for` below.
            let _ = self.member_left(u, now);
        }
        self.members = here.clone();
        let mut out = Vec::new();
        for u in here {
            out.extend(self.keys_for(u));
        }
        out
    }

    /// A key `from` sealed for us. A first key from someone we did not know makes them a member
    /// (they joined while we did, or before our roster arrived) and gets them ours.
    pub fn receive(
        &mut self,
        from: UserId,
        sealed: &SealedKey,
    ) -> Result<Vec<Outgoing>, E2eeError> {
        if from == self.me() {
            return Err(E2eeError::BadKey {
                from,
                reason: "a key from ourselves",
            });
        }
        let key = self.me.open(&from, self.channel, sealed)?;
        self.ring.add_receiving(from, &key)?;
        Ok(self.member_joined(from))
    }

    /// When [`KeyAgent::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next.as_ref().map(|(_, at)| *at)
    }

    /// Switches to the next key once its time has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((k, at)) = &self.next
            && *at <= now
        {
            match self.ring.set_sending(k) {
                Ok(()) => self.current = k.clone(),
                // Cannot happen with a 32-byte secret; keep the old key rather than none.
                Err(_) => return,
            }
            self.next = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameTransform, MediaKind};
    use rand::SeedableRng;
    use std::collections::BTreeMap;

    const CH: ChannelId = ChannelId(7);

    /// Agents in one room with the relay in between: delivers every outgoing key, in order.
    struct Room {
        agents: BTreeMap<UserId, KeyAgent>,
        now: Instant,
        delivered: usize,
    }

    impl Room {
        fn new() -> Self {
            Self {
                agents: BTreeMap::new(),
                now: Instant::now(),
                delivered: 0,
            }
        }

        fn agent(seed: u8) -> KeyAgent {
            KeyAgent::new(
                LocalKeys::from_seed([seed; 32]),
                CH,
                StdRng::seed_from_u64(u64::from(seed)),
            )
            .unwrap_or_else(|e| panic!("{e}"))
        }

        /// `seed` joins: the relay tells everyone present (roster_join); keys flow until quiet.
        fn join(&mut self, seed: u8) -> UserId {
            let a = Self::agent(seed);
            let id = a.me();
            let mut queue = Vec::new();
            for (u, other) in self.agents.iter_mut() {
                queue.extend(other.member_joined(id).into_iter().map(|o| (*u, o)));
            }
            self.agents.insert(id, a);
            self.flush(queue);
            id
        }

        fn leave(&mut self, id: &UserId) -> KeyAgent {
            let gone = self.agents.remove(id).unwrap_or_else(|| panic!("not here"));
            let mut queue = Vec::new();
            for (u, other) in self.agents.iter_mut() {
                queue.extend(other.member_left(id, self.now).into_iter().map(|o| (*u, o)));
            }
            self.flush(queue);
            gone
        }

        fn flush(&mut self, mut queue: Vec<(UserId, Outgoing)>) {
            while let Some((from, o)) = (!queue.is_empty()).then(|| queue.remove(0)) {
                self.delivered += 1;
                // The relay drops signals to someone no longer in the channel.
                let Some(to) = self.agents.get_mut(&o.to) else {
                    continue;
                };
                let more = to.receive(from, &o.key).unwrap_or_else(|e| panic!("{e}"));
                queue.extend(more.into_iter().map(|m| (o.to, m)));
            }
        }

        fn advance(&mut self, d: Duration) {
            self.now += d;
            for a in self.agents.values_mut() {
                a.handle_timeout(self.now);
            }
        }

        fn send(&self, from: &UserId, frame: &[u8]) -> Vec<u8> {
            self.agents[from]
                .ring()
                .encrypt(MediaKind::Audio, frame)
                .unwrap_or_else(|e| panic!("{e}"))
        }
    }

    #[test]
    fn everyone_gets_everyone_s_key_without_knowing_the_roster() {
        let mut room = Room::new();
        let ids: Vec<UserId> = (1..=4).map(|s| room.join(s)).collect();
        // Each pair exchanged exactly one key each way: 4 * 3 messages.
        assert_eq!(room.delivered, 12);
        for a in &ids {
            let ct = room.send(a, b"hello");
            for b in ids.iter().filter(|b| *b != a) {
                assert_eq!(
                    room.agents[b].ring().decrypt(a, MediaKind::Audio, &ct),
                    Ok(b"hello".to_vec()),
                    "{b:?} cannot decrypt {a:?}"
                );
            }
        }
    }

    #[test]
    fn a_member_who_left_cannot_decrypt_what_is_sent_after_the_rotation() {
        let mut room = Room::new();
        let (a, b, c) = (room.join(1), room.join(2), room.join(3));
        let before = room.send(&a, b"before");
        let carol = room.leave(&c);
        // Rotation pending: the new key is out, the old one still in use.
        assert_eq!(room.agents[&a].epoch(), 1);
        assert!(room.agents[&a].poll_timeout().is_some());
        let during = room.send(&a, b"during");
        assert!(carol.ring().decrypt(&a, MediaKind::Audio, &during).is_ok());
        room.advance(ROTATION_DELAY);
        assert_eq!(room.agents[&a].epoch(), 2);
        assert_eq!(room.agents[&a].poll_timeout(), None);
        let after = room.send(&a, b"after");
        assert_eq!(
            room.agents[&b].ring().decrypt(&a, MediaKind::Audio, &after),
            Ok(b"after".to_vec())
        );
        assert_eq!(
            carol.ring().decrypt(&a, MediaKind::Audio, &after),
            Err(E2eeError::NoKey { from: a, key_id: 2 })
        );
        // Frames in flight from before the rotation still decrypt for those who stayed.
        assert!(
            room.agents[&b]
                .ring()
                .decrypt(&a, MediaKind::Audio, &before)
                .is_ok()
        );
        // And the others dropped Carol's keys: her frames no longer play.
        let hers = carol
            .ring()
            .encrypt(MediaKind::Audio, b"still talking")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            room.agents[&b]
                .ring()
                .decrypt(&c, MediaKind::Audio, &hers)
                .is_err()
        );
    }

    #[test]
    fn joining_during_a_rotation_gets_both_keys() {
        let mut room = Room::new();
        let (a, _b, c) = (room.join(1), room.join(2), room.join(3));
        room.leave(&c);
        let d = room.join(4);
        let now_frame = room.send(&a, b"epoch 1");
        assert!(
            room.agents[&d]
                .ring()
                .decrypt(&a, MediaKind::Audio, &now_frame)
                .is_ok()
        );
        room.advance(ROTATION_DELAY);
        let later = room.send(&a, b"epoch 2");
        assert!(
            room.agents[&d]
                .ring()
                .decrypt(&a, MediaKind::Audio, &later)
                .is_ok()
        );
    }

    #[test]
    fn two_leaves_in_a_row_and_the_last_one_alone() {
        let mut room = Room::new();
        let (a, b, c) = (room.join(1), room.join(2), room.join(3));
        room.leave(&b);
        room.leave(&c);
        // Alone: switched at once to the latest epoch.
        assert_eq!(room.agents[&a].epoch(), 3);
        assert_eq!(room.agents[&a].poll_timeout(), None);
    }

    #[test]
    fn a_member_whose_link_dropped_is_heard_and_hears_after_rejoining() {
        let mut room = Room::new();
        let (a, b, c) = (room.join(1), room.join(2), room.join(3));
        // c's relay link drops: the relay tells a and b that c left; c hears of nothing.
        let mut queue = Vec::new();
        for (u, other) in room.agents.iter_mut().filter(|(u, _)| **u != c) {
            queue.extend(other.member_left(&c, room.now).into_iter().map(|o| (*u, o)));
        }
        room.flush(queue);
        room.advance(ROTATION_DELAY);
        assert_eq!(room.agents[&a].epoch(), 2);
        // Meanwhile b left for good; c missed that too.
        let gone = room.agents.remove(&b).unwrap_or_else(|| panic!("b"));
        let queue: Vec<_> = room
            .agents
            .get_mut(&a)
            .map(|x| x.member_left(&b, room.now))
            .unwrap_or_default()
            .into_iter()
            .map(|o| (a, o))
            .collect();
        room.flush(queue);
        room.advance(ROTATION_DELAY);
        // c re-joins: a sees roster_join(c), c gets the roster [a, c] in its answer.
        let mut queue: Vec<_> = room
            .agents
            .get_mut(&a)
            .map(|x| x.member_joined(c))
            .unwrap_or_default()
            .into_iter()
            .map(|o| (a, o))
            .collect();
        let before = room.agents[&c].epoch();
        let now = room.now;
        queue.extend(
            room.agents
                .get_mut(&c)
                .map(|x| x.rejoined([a, c], now))
                .unwrap_or_default()
                .into_iter()
                .map(|o| (c, o)),
        );
        room.flush(queue);
        room.advance(ROTATION_DELAY);
        // c missed b's leave and rotated for it; b cannot read what c sends now.
        assert!(room.agents[&c].epoch() > before);
        assert_eq!(
            room.agents[&c]
                .members()
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            vec![a]
        );
        let from_c = room.send(&c, b"back again");
        assert_eq!(
            room.agents[&a]
                .ring()
                .decrypt(&c, MediaKind::Audio, &from_c),
            Ok(b"back again".to_vec())
        );
        assert!(gone.ring().decrypt(&c, MediaKind::Audio, &from_c).is_err());
        let from_a = room.send(&a, b"welcome back");
        assert_eq!(
            room.agents[&c]
                .ring()
                .decrypt(&a, MediaKind::Audio, &from_a),
            Ok(b"welcome back".to_vec())
        );
    }

    #[test]
    fn keys_not_for_us_or_from_ourselves_are_refused() {
        let mut alice = Room::agent(1);
        let mut bob = Room::agent(2);
        let carol = Room::agent(3);
        let for_carol = alice.member_joined(carol.me());
        assert_eq!(for_carol.len(), 1);
        let err = bob.receive(alice.me(), &for_carol[0].key);
        assert!(matches!(err, Err(E2eeError::BadKey { .. })), "{err:?}");
        assert!(bob.members().is_empty(), "a refused key made a member");
        let me = bob.me();
        assert!(bob.receive(me, &for_carol[0].key).is_err());
        let _ = &mut alice;
    }
}
