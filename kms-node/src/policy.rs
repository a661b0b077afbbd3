//! Policies: command name patterns mapped to glob patterns over names.
//!
//! `{"allow": {"KEY:GENERATE": ["my-key*"]}, "deny": {"KEY:*": ["my-key-secret"]}}`
//!
//! A request for command `C` on name `N` is allowed if some allow entry's
//! command pattern matches `C` and one of its name patterns matches `N`, and no
//! deny entry matches the same way. Deny wins; no matching entry means deny.
//! Patterns are globs: `*` matches any run of characters, `?` one character.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use kms_client::proto;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub allow: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub deny: BTreeMap<String, Vec<String>>,
}

impl Policy {
    /// Parses the JSON form and validates it.
    pub fn from_json(b: &[u8]) -> Result<Self, String> {
        let p: Policy =
            serde_json::from_slice(b).map_err(|e| format!("invalid policy JSON: {e}"))?;
        p.validate()?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<(), String> {
        for (cmd, pats) in self.allow.iter().chain(self.deny.iter()) {
            if cmd.is_empty() || cmd.len() > 64 {
                return Err(format!("invalid command pattern '{cmd}'"));
            }
            if !cmd.contains(['*', '?']) && kms_client::Command::from_name(cmd).is_none() {
                return Err(format!("unknown command '{cmd}' in policy"));
            }
            for p in pats {
                if p.is_empty() || p.len() > 256 {
                    return Err(format!("invalid name pattern '{p}' for {cmd}"));
                }
            }
        }
        Ok(())
    }

    fn matches(rules: &BTreeMap<String, Vec<String>>, cmd: &str, name: &str) -> bool {
        rules.iter().any(|(c, pats)| {
            glob(&c.to_ascii_uppercase(), cmd) && pats.iter().any(|p| glob(p, name))
        })
    }

    /// Whether this policy allows `cmd` (canonical name) on `name`.
    pub fn allows(&self, cmd: &str, name: &str) -> bool {
        !Self::matches(&self.deny, cmd, name) && Self::matches(&self.allow, cmd, name)
    }

    pub fn from_proto(req: &proto::CreatePolicyRequest) -> Result<Self, String> {
        let conv = |m: &std::collections::HashMap<String, proto::RuleSet>| {
            m.iter()
                .map(|(k, v)| {
                    let mut pats: Vec<String> = v.rules.keys().cloned().collect();
                    pats.sort();
                    (k.clone(), pats)
                })
                .collect::<BTreeMap<_, _>>()
        };
        let p = Policy {
            allow: conv(&req.allow),
            deny: conv(&req.deny),
        };
        p.validate()?;
        Ok(p)
    }

    pub fn to_proto_rules(
        m: &BTreeMap<String, Vec<String>>,
    ) -> std::collections::HashMap<String, proto::RuleSet> {
        m.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    proto::RuleSet {
                        rules: v.iter().map(|p| (p.clone(), proto::Rule {})).collect(),
                    },
                )
            })
            .collect()
    }
}

/// Glob match with `*` and `?`, linear time (no backtracking blow-up).
pub fn glob(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = s.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("*", "abc"));
        assert!(glob("my-key*", "my-key"));
        assert!(glob("my-key*", "my-key-2"));
        assert!(!glob("my-key*", "your-key"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*-prod-*", "db-prod-1"));
        assert!(glob("KEY:*", "KEY:GENERATE"));
        assert!(!glob("a*", ""));
        assert!(glob(&"*a".repeat(20), &"a".repeat(40)));
    }

    #[test]
    fn deny_wins_and_default_deny() {
        let p = Policy::from_json(
            br#"{"allow": {"KEY:GENERATE": ["my-key*"], "KEY:*": ["shared"]},
                 "deny": {"KEY:GENERATE": ["my-key-secret"]}}"#,
        )
        .unwrap();
        assert!(p.allows("KEY:GENERATE", "my-key-1"));
        assert!(!p.allows("KEY:GENERATE", "my-key-secret"));
        assert!(!p.allows("KEY:DECRYPT", "my-key-1"));
        assert!(p.allows("KEY:DECRYPT", "shared"));
        assert!(!Policy::default().allows("KEY:GENERATE", "x"));
    }

    #[test]
    fn invalid_policies() {
        assert!(Policy::from_json(b"{").is_err());
        assert!(Policy::from_json(br#"{"allow": {"KEY:NOPE": ["x"]}}"#).is_err());
        assert!(Policy::from_json(br#"{"allow": {"KEY:CREATE": [""]}}"#).is_err());
        assert!(Policy::from_json(br#"{"permit": {}}"#).is_err());
    }
}
