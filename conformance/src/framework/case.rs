//! The case type every checker lists its rules with, and selection by id or prefix.

/// How binding a rule is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Required: a failure fails the run.
    Must,
    /// Recommended: a failure is a WARN, or a FAIL under `--strict`.
    Should,
}

impl Level {
    /// The name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
        }
    }

    /// Whether a failure at this level fails the run.
    pub fn counts(self, strict: bool) -> bool {
        match self {
            Level::Must => true,
            Level::Should => strict,
        }
    }
}

/// One conformance case: a rule with a stable id, and the body `B` that checks it (the
/// checker decides what a body is: an async play against a live peer, or a script).
pub struct Case<B> {
    /// Stable id, `<PROTO>-<AREA>-<RULE>`: snapshots, reports and `--case` use it.
    pub id: &'static str,
    /// MUST or SHOULD.
    pub level: Level,
    /// Where the rule comes from (`seed`, `notes`, `tunnelbed`, ...), so a reader can
    /// find the text it checks.
    pub source: &'static str,
    /// The rule, short enough for a table.
    pub clause: &'static str,
    /// Set when we deliberately behave unlike the reference implementation: how and why.
    pub differs: Option<&'static str>,
    /// Checks the rule.
    pub body: B,
}

/// The ids among `ids` matching `patterns`: an exact id, or a prefix up to a `-`
/// (`PONG-RST` selects every `PONG-RST-...`), case-insensitive, in the list's order
/// whatever order they were asked in. Empty patterns select every id. An unknown pattern
/// is an error that lists the ids.
pub fn select(ids: &[&'static str], patterns: &[String]) -> Result<Vec<&'static str>, String> {
    if patterns.is_empty() {
        return Ok(ids.to_vec());
    }
    let mut chosen = Vec::new();
    for p in patterns {
        let p = p.trim().to_ascii_uppercase();
        let hits: Vec<&'static str> = ids
            .iter()
            .copied()
            .filter(|id| *id == p || id.starts_with(&format!("{p}-")))
            .collect();
        if hits.is_empty() {
            return Err(format!(
                "no case matches {p:?}; known ids: {}",
                ids.join(", ")
            ));
        }
        for h in hits {
            if !chosen.contains(&h) {
                chosen.push(h);
            }
        }
    }
    Ok(ids
        .iter()
        .copied()
        .filter(|id| chosen.contains(id))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_by_id_and_prefix() {
        let ids = ["X-A-ONE", "X-A-TWO", "X-B-ONE"];
        assert_eq!(select(&ids, &[]).unwrap(), ids);
        assert_eq!(
            select(&ids, &["x-a".into()]).unwrap(),
            ["X-A-ONE", "X-A-TWO"]
        );
        assert_eq!(
            select(&ids, &["X-B-ONE".into(), "X-A-ONE".into()]).unwrap(),
            ["X-A-ONE", "X-B-ONE"]
        );
        assert!(select(&ids, &["X-A-T".into()]).is_err());
        assert!(select(&ids, &["NOPE".into()])
            .unwrap_err()
            .contains("X-B-ONE"));
        assert!(Level::Should.counts(true) && !Level::Should.counts(false));
    }
}
