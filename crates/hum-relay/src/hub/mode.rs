//! Mesh or SFU, per voice channel: the switch rule (sans-IO, a pure function of the member
//! count and the current mode) and each channel's live SFU state.
//!
//! A channel is a full mesh while it has at most `mesh_max` members (8 by default; the relay
//! operator may lower it with `--mesh-limit`, 0 = always SFU). The member that makes it
//! `mesh_max + 1` moves it to the SFU. It goes back to mesh only at `mesh_max - 2` members or
//! fewer (hysteresis): a channel of 8-9 people whose 9th keeps dropping and rejoining would
//! otherwise move everyone back and forth each time. An empty channel is a mesh again. Without
//! an SFU (`--sfu-bind off`) every channel is a mesh.
//!
//! Video lowers the limit: while any member's camera is on (the roster's `video` flag) a mesh
//! holds at most [`ModePolicy::VIDEO_MESH_LIMIT`] (6) members, since each of them uploads its
//! camera once per other member ([`ModePolicy::with_video`]). A camera turned on in a mesh of 7
//! moves it to the SFU; turned off, the usual hysteresis applies (back to mesh at 6 or fewer).
//!
//! An admin may lower the limit per channel (`channel_configure { mesh_limit }`,
//! [`ModePolicy::with_limit`]); it is applied like the operator's, with the same hysteresis, and
//! kept with the channel's voice state while the relay runs (not persisted).
//!
//! Invariants (checked by the tests): the mode changes only when the member count crosses a
//! threshold in the direction of the change; between `back_to_mesh_at + 1` and `mesh_max`
//! members the mode is whatever it was (no flapping); with no SFU the mode is always mesh.

use std::collections::BTreeSet;

use hum_proto::UserId;
use hum_proto::signal::VoiceTopology;

/// When a channel is a mesh and when it uses the SFU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModePolicy {
    /// A mesh holds at most this many members; one more moves the channel to the SFU.
    pub mesh_max: usize,
    /// Whether an SFU runs at all.
    pub sfu_enabled: bool,
}

impl Default for ModePolicy {
    fn default() -> Self {
        ModePolicy {
            mesh_max: 8,
            sfu_enabled: false,
        }
    }
}

impl ModePolicy {
    /// The largest mesh the clients support (hum-engine's `MAX_MESH_PARTICIPANTS`).
    pub const MESH_LIMIT: usize = 8;

    /// The largest mesh while any member sends video (each camera goes up once per peer).
    pub const VIDEO_MESH_LIMIT: usize = 6;

    /// The policy for a channel where `video` says whether any member's camera is on.
    pub fn with_video(self, video: bool) -> ModePolicy {
        if !video {
            return self;
        }
        ModePolicy {
            mesh_max: self.mesh_max.min(Self::VIDEO_MESH_LIMIT),
            ..self
        }
    }

    /// The policy for a channel whose admin set a mesh limit (`None`: the relay's). It only
    /// lowers the relay's limit.
    pub fn with_limit(self, limit: Option<usize>) -> ModePolicy {
        ModePolicy {
            mesh_max: limit.map_or(self.mesh_max, |l| l.min(self.mesh_max)),
            ..self
        }
    }

    /// An SFU channel goes back to mesh at this many members or fewer.
    pub fn back_to_mesh_at(&self) -> usize {
        self.mesh_max.saturating_sub(2)
    }

    /// The mode a channel in `current` mode should be in with `members` members.
    pub fn next(&self, current: VoiceTopology, members: usize) -> VoiceTopology {
        if !self.sfu_enabled || members == 0 {
            return VoiceTopology::Mesh;
        }
        match current {
            VoiceTopology::Mesh if members > self.mesh_max => VoiceTopology::Sfu,
            VoiceTopology::Sfu if members <= self.back_to_mesh_at() => VoiceTopology::Mesh,
            c => c,
        }
    }
}

/// The live SFU state of one voice channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelVoice {
    pub mode: VoiceTopology,
    /// Members connected (or connecting) to the SFU.
    pub sfu: BTreeSet<UserId>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use VoiceTopology::{Mesh, Sfu};

    fn on() -> ModePolicy {
        ModePolicy {
            mesh_max: 8,
            sfu_enabled: true,
        }
    }

    /// Runs member counts through the policy from an empty mesh; returns the modes.
    fn walk(p: ModePolicy, counts: &[usize]) -> Vec<VoiceTopology> {
        let mut m = Mesh;
        counts
            .iter()
            .map(|n| {
                m = p.next(m, *n);
                m
            })
            .collect()
    }

    #[test]
    fn the_ninth_member_moves_a_mesh_to_the_sfu_and_six_move_it_back() {
        let modes = walk(on(), &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 9, 8, 7, 6, 5]);
        assert_eq!(
            modes,
            [
                Mesh, Mesh, Mesh, Mesh, Mesh, Mesh, Mesh, Mesh, Sfu, Sfu, Sfu, Sfu, Sfu, Mesh, Mesh
            ]
        );
    }

    #[test]
    fn a_member_flapping_at_the_threshold_switches_once() {
        // 8 <-> 9 twenty times: one switch to the SFU, none back.
        let mut counts = vec![8];
        for _ in 0..20 {
            counts.extend([9, 8]);
        }
        let modes = walk(on(), &counts);
        let switches = modes.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(switches, 1, "{modes:?}");
        assert_eq!(modes.last(), Some(&Sfu));
    }

    #[test]
    fn a_lower_limit_is_respected_and_zero_means_always_sfu() {
        let p = ModePolicy {
            mesh_max: 4,
            sfu_enabled: true,
        };
        assert_eq!(walk(p, &[4, 5, 3, 2]), [Mesh, Sfu, Sfu, Mesh]);
        let p = ModePolicy {
            mesh_max: 0,
            sfu_enabled: true,
        };
        assert_eq!(walk(p, &[1, 2, 1, 0, 1]), [Sfu, Sfu, Sfu, Mesh, Sfu]);
    }

    #[test]
    fn with_a_camera_on_a_mesh_holds_six_and_a_camera_turned_on_in_a_mesh_of_seven_moves_it() {
        let p = on();
        // (members, any camera on) -> mode
        let steps = [
            (6, true, Mesh),
            (7, false, Mesh), // voice only: 7 is fine
            (7, true, Sfu),   // a camera goes on: too many uploads for a mesh
            (7, false, Sfu),  // and off again: hysteresis (back to mesh at 6)
            (6, false, Mesh),
            (7, true, Sfu), // the 7th joins a video mesh of 6
        ];
        let mut m = Mesh;
        for (n, video, want) in steps {
            m = p.with_video(video).next(m, n);
            assert_eq!(m, want, "{n} members, video {video}");
        }
        // A lower operator limit stays the lower one; without video nothing changes.
        let low = ModePolicy {
            mesh_max: 4,
            sfu_enabled: true,
        };
        assert_eq!(low.with_video(true), low);
        assert_eq!(p.with_video(false), p);
        assert_eq!(p.with_video(true).mesh_max, ModePolicy::VIDEO_MESH_LIMIT);
    }

    #[test]
    fn without_an_sfu_every_channel_is_a_mesh() {
        let p = ModePolicy {
            mesh_max: 8,
            sfu_enabled: false,
        };
        assert!(walk(p, &[1, 9, 20, 100, 3]).iter().all(|m| *m == Mesh));
        assert_eq!(p.next(Sfu, 12), Mesh);
    }

    #[test]
    fn switches_only_cross_thresholds_in_their_direction() {
        // Random walks of member counts: every change of mode happened on a count past the
        // threshold of that direction, and no count in the band between changed it.
        use rand::{Rng, SeedableRng};
        for seed in 0..20u64 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let p = ModePolicy {
                mesh_max: rng.gen_range(0..=8),
                sfu_enabled: true,
            };
            let (mut n, mut m) = (0usize, Mesh);
            for _ in 0..500 {
                n = if rng.gen_bool(0.5) {
                    n + 1
                } else {
                    n.saturating_sub(1)
                };
                let next = p.next(m, n);
                match (m, next) {
                    (Mesh, Sfu) => assert!(n > p.mesh_max, "seed {seed}: to sfu at {n}"),
                    (Sfu, Mesh) => {
                        assert!(n <= p.back_to_mesh_at(), "seed {seed}: to mesh at {n}")
                    }
                    _ => {}
                }
                m = next;
            }
        }
    }

    #[test]
    fn an_admin_limit_only_lowers_the_relays_and_keeps_the_hysteresis() {
        let p = on().with_limit(Some(4));
        assert_eq!(p.mesh_max, 4);
        assert_eq!(
            walk(p, &[1, 2, 3, 4, 5, 4, 3, 2, 1]),
            [Mesh, Mesh, Mesh, Mesh, Sfu, Sfu, Sfu, Mesh, Mesh]
        );
        // Above the relay's limit: the relay's.
        assert_eq!(on().with_limit(Some(20)).mesh_max, 8);
        assert_eq!(on().with_limit(None), on());
        // With a camera on, the lower of the two.
        assert_eq!(on().with_limit(Some(4)).with_video(true).mesh_max, 4);
        assert_eq!(on().with_limit(Some(7)).with_video(true).mesh_max, 6);
        // 0: the SFU from the first member.
        assert_eq!(walk(on().with_limit(Some(0)), &[1, 2, 0]), [Sfu, Sfu, Mesh]);
    }
}
