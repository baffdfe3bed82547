//! Failing streams whose application waited to its own bound because the link lost
//! every copy of the proxy front's reset (real TCP only). A reset is never
//! retransmitted, and an application that only reads sends nothing that would draw
//! another, so a kernel peer waits the same way; the run's reset log
//! ([`crate::realtcp::resets`]) tells such a wait from a front that never reset (a hang,
//! still a failure). Used by `pong-streams`, `vless-tcp` and `pong-remote-crash`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::realtcp::resets::ResetCount;
use crate::scenario::Ctx;
use crate::scenarios::pong_common::AppSaw;
use crate::scenarios::proxy_streams::Plan;

/// Failing streams whose application waited to its own bound because the link lost
/// every copy of the local's reset (real TCP only: a reset is never retransmitted, and
/// an application that only reads sends nothing that would draw another; a kernel peer
/// waits the same way).
pub struct LostResets {
    /// The role whose resets these are, for the summary ("local", "client").
    who: &'static str,
    /// The applications' own bound, for the summary.
    bound: Duration,
    /// (tag, reset copies the front sent).
    tags: Vec<(u32, u32)>,
}

impl LostResets {
    /// None yet; `who` names the front in the summary, `bound` is how long the
    /// applications wait before they give up.
    pub fn new(who: &'static str, bound: Duration) -> Self {
        Self {
            who,
            bound,
            tags: Vec::new(),
        }
    }

    /// What every planned stream's application saw (stream `i` is tag `i`), judged as
    /// [`LostResets::judge`] does.
    pub fn judge_all(
        &mut self,
        ctx: &Ctx,
        addrs: &BTreeMap<u32, (SocketAddr, SocketAddr)>,
        plans: &[Plan],
        app: &BTreeMap<u32, AppSaw>,
    ) -> BTreeMap<u32, AppSaw> {
        plans
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let tag = i as u32;
                self.judge(ctx, addrs, tag, p.fails(), app.get(&tag))
                    .map(|saw| (tag, saw))
            })
            .collect()
    }

    /// How many streams were judged this way.
    pub fn count(&self) -> usize {
        self.tags.len()
    }

    /// What the application of stream `tag` saw, for the verdict (see [`judge_hang`]),
    /// with the resets the front sent on its connection from the run's log.
    pub fn judge(
        &mut self,
        ctx: &Ctx,
        addrs: &BTreeMap<u32, (SocketAddr, SocketAddr)>,
        tag: u32,
        fail: bool,
        app: Option<&AppSaw>,
    ) -> Option<AppSaw> {
        let resets = match addrs.get(&tag) {
            Some((SocketAddr::V4(me), SocketAddr::V4(front))) => {
                Some(ctx.world.tcp_resets().get(*front, *me))
            }
            _ => None,
        };
        let judged = judge_hang(fail, app, resets);
        if judged.as_ref() != app {
            self.tags.push((tag, resets.map_or(0, |r| r.sent)));
        }
        judged
    }

    /// The detail for the check (empty when no reset was lost).
    pub fn summary(&self) -> String {
        if self.tags.is_empty() {
            return String::new();
        }
        let list: Vec<String> = self
            .tags
            .iter()
            .map(|(t, n)| format!("s{t:03} ({n} sent)"))
            .collect();
        format!(
            "; {} failing streams ended only by the application's {} s bound: the {} reset them and the link lost every copy ({})",
            self.tags.len(),
            self.bound.as_secs(),
            self.who,
            list.join(", ")
        )
    }
}

/// A hang of a stream meant to `fail` becomes an error when `resets` (those the front
/// sent on the application's connection) shows the front reset it and no copy arrived;
/// anything else stays as it was: a hang with no reset sent (pong never signalled) or
/// with one that arrived (a stack ignored it) is still a hang.
pub fn judge_hang(fail: bool, app: Option<&AppSaw>, resets: Option<ResetCount>) -> Option<AppSaw> {
    match resets {
        Some(r) if fail && app == Some(&AppSaw::Hung) && r.all_lost() => {
            Some(AppSaw::Error(format!(
                "hung to the application's bound: the front sent {} resets, none arrived",
                r.sent
            )))
        }
        _ => app.cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hang_is_excused_only_when_every_reset_was_lost() {
        let hung = Some(&AppSaw::Hung);
        let lost = Some(ResetCount {
            sent: 3,
            arrived: 0,
        });
        assert!(matches!(
            judge_hang(true, hung, lost),
            Some(AppSaw::Error(e)) if e.contains("3 resets")
        ));
        // Pong never reset the connection: still a hang.
        assert_eq!(
            judge_hang(true, hung, Some(ResetCount::default())),
            Some(AppSaw::Hung)
        );
        // A reset arrived and the application still hung: still a hang.
        let arrived = Some(ResetCount {
            sent: 3,
            arrived: 1,
        });
        assert_eq!(judge_hang(true, hung, arrived), Some(AppSaw::Hung));
        // No address known (the connect itself hung) or ideal TCP (empty log): a hang.
        assert_eq!(judge_hang(true, hung, None), Some(AppSaw::Hung));
        // A stream meant to end cleanly is never excused.
        assert_eq!(judge_hang(false, hung, lost), Some(AppSaw::Hung));
        // Other outcomes pass through.
        let err = AppSaw::Error("x".into());
        assert_eq!(judge_hang(true, Some(&err), lost), Some(err));
        assert_eq!(judge_hang(true, None, lost), None);
    }
}
