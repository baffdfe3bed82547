//! Deliberate faults that break one invariant on purpose, to prove that each check can
//! fail and that sweeps report failures with their replay lines.
//!
//! Every kind acts on seeds that are multiples of 4 only, so a sweep shows failing seeds
//! among passing ones. `Integrity` is scenario-specific (each scenario spoils a byte or a
//! message its own way); the others are generic and act on every scenario:
//!
//! | kind | what it does | invariant that must fail |
//! |---|---|---|
//! | `integrity` | the scenario alters a byte or a message it received | `integrity` |
//! | `data-path` | the network drops one chunk of a TCP stream, or the ARQ driver drops one chunk of received bytes before the application sees it | `integrity` (and usually more) |
//! | `liveness` | a client that is still busy when the deadline after the last fault has passed joins the run | `liveness` |
//! | `leak` | the first flow that closes is kept open in the ledger, as if its application forgot to close it | `no-leak` |
//! | `determinism` | the link model, the turmoil RNG and the scenario RNG are salted from an unseeded source | the determinism check (two runs of one seed differ) |

use std::fmt;
use std::str::FromStr;

/// Which invariant a sabotaged run breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Sabotage {
    /// The scenario alters data it received just before the ledger sees it.
    Integrity,
    /// One chunk of application data is lost inside the network or the ARQ driver.
    DataPath,
    /// The run does not finish within its deadline.
    Liveness,
    /// A flow is left open.
    Leak,
    /// An unseeded choice makes two runs of one seed differ.
    Determinism,
}

impl Sabotage {
    /// Every kind, in the order `--help` lists them.
    pub const ALL: [Sabotage; 5] = [
        Sabotage::Integrity,
        Sabotage::DataPath,
        Sabotage::Liveness,
        Sabotage::Leak,
        Sabotage::Determinism,
    ];

    /// The name used on the command line and in replay lines.
    pub fn name(self) -> &'static str {
        match self {
            Sabotage::Integrity => "integrity",
            Sabotage::DataPath => "data-path",
            Sabotage::Liveness => "liveness",
            Sabotage::Leak => "leak",
            Sabotage::Determinism => "determinism",
        }
    }

    /// Whether a run with `seed` is sabotaged (multiples of 4).
    pub fn applies_to(seed: u64) -> bool {
        seed.is_multiple_of(4)
    }
}

impl fmt::Display for Sabotage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Sabotage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sabotage::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown sabotage {s:?} (known: {})",
                    Sabotage::ALL.map(|k| k.name()).join(", ")
                )
            })
    }
}

/// A salt from an unseeded source: the determinism sabotage mixes it into the seeds.
/// (Each `RandomState` has fresh keys, so two runs in one process differ too.)
pub(crate) fn unseeded_salt() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x5ab0_7a9e_u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in Sabotage::ALL {
            assert_eq!(k.name().parse::<Sabotage>(), Ok(k));
        }
        assert!("nope"
            .parse::<Sabotage>()
            .unwrap_err()
            .contains("known: integrity"));
    }

    #[test]
    fn salts_differ() {
        assert_ne!(unseeded_salt(), unseeded_salt());
    }
}
