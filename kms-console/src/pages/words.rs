//! What an identity may do, in plain words: its privilege, and for a User
//! its policy's allow and deny rules as sentences ("May generate data keys
//! with keys whose name starts with `app-`").

use std::collections::HashMap;

use kms_client::proto::RuleSet;
use maud::{html, Markup};

/// The verb phrase of a command, and the noun of what it acts on.
fn verb(cmd: &str) -> Option<(&'static str, &'static str)> {
    Some(match cmd {
        "KEY:CREATE" => ("create", "key"),
        "KEY:DELETE" => ("delete", "key"),
        "KEY:IMPORT" => ("import", "key"),
        "KEY:STATUS" | "KEY:DESCRIBE" => ("read the status of", "key"),
        "KEY:ENCRYPT" => ("encrypt with", "key"),
        "KEY:DECRYPT" => ("decrypt with", "key"),
        "KEY:GENERATE" => ("generate data keys with", "key"),
        "KEY:LIST" | "KEY:LISTALL" => ("list", "key"),
        "KEY:LISTVERSIONS" => ("list the versions of", "key"),
        "KEY:MAC" | "KEY:RAWMAC" => ("compute MACs with", "key"),
        "KEY:MACVERIFY" => ("verify MACs with", "key"),
        "KEY:RAWENCRYPT" => ("encrypt raw blocks with", "key"),
        "KEY:RAWDECRYPT" => ("decrypt raw blocks with", "key"),
        "KEY:SIGN" => ("sign with", "key"),
        "KEY:VERIFY" => ("verify signatures with", "key"),
        "KEY:PUBLICKEY" => ("read the public key of", "key"),
        "KEY:ASYMDECRYPT" => ("decrypt (RSA) with", "key"),
        "POLICY:CREATE" => ("create or replace", "policy"),
        "POLICY:DELETE" => ("delete", "policy"),
        "POLICY:ASSIGN" => ("assign", "policy"),
        "POLICY:GET" | "POLICY:STATUS" => ("read", "policy"),
        "POLICY:LIST" => ("list", "policy"),
        "IDENTITY:CREATE" => ("create", "identity"),
        "IDENTITY:DELETE" => ("delete", "identity"),
        "IDENTITY:STATUS" => ("read", "identity"),
        "IDENTITY:LIST" => ("list", "identity"),
        "OBJECT:CREATE" => ("create", "object"),
        "OBJECT:SET" => ("change", "object"),
        "OBJECT:DELETE" => ("delete", "object"),
        "OBJECT:LIST" => ("list", "object"),
        _ => return None,
    })
}

fn plural(noun: &str) -> &str {
    match noun {
        "key" => "keys",
        "policy" => "policies",
        "identity" => "identities",
        "object" => "token objects",
        _ => "names",
    }
}

/// What a name pattern covers, e.g. "any key", "keys whose name starts with
/// `app-`", "the key `k1`".
fn names(noun: &str, pattern: &str) -> Markup {
    let pl = plural(noun);
    html! {
        @if pattern == "*" { "any " (noun) }
        @else if let Some(p) = pattern.strip_suffix('*').filter(|p| !p.contains(['*', '?'])) {
            (pl) " whose name starts with " code { (p) }
        }
        @else if !pattern.contains(['*', '?']) { "the " (noun) " " code { (pattern) } }
        @else { (pl) " matching " code { (pattern) } }
    }
}

/// One sentence per command of a rule set.
fn sentences(rules: &HashMap<String, RuleSet>, lead: &str) -> Vec<Markup> {
    let mut cmds: Vec<_> = rules.iter().collect();
    cmds.sort_by(|a, b| a.0.cmp(b.0));
    cmds.into_iter()
        .map(|(cmd, set)| {
            let upper = cmd.to_ascii_uppercase();
            let mut pats: Vec<&String> = set.rules.keys().collect();
            pats.sort();
            let (phrase, noun) = match verb(&upper) {
                Some((v, n)) => (html! { (v) }, n),
                None => match upper.split_once(':') {
                    Some((fam, "*")) => {
                        let noun = match fam {
                            "KEY" => "key",
                            "POLICY" => "policy",
                            "IDENTITY" => "identity",
                            "OBJECT" => "object",
                            _ => "name",
                        };
                        (html! { "run every " code { (fam) } " command on" }, noun)
                    }
                    _ => (
                        html! { "run the commands matching " code { (cmd) } " on" },
                        "name",
                    ),
                },
            };
            html! {
                li { (lead) " " (phrase) " "
                    @for (i, p) in pats.iter().enumerate() {
                        @if i > 0 { @if i + 1 == pats.len() { " or " } @else { ", " } }
                        (names(noun, p))
                    }
                    @if pats.is_empty() { "nothing (no name pattern)" }
                    "."
                }
            }
        })
        .collect()
}

/// What a User with this policy may do.
pub(super) fn policy(allow: &HashMap<String, RuleSet>, deny: &HashMap<String, RuleSet>) -> Markup {
    let a = sentences(allow, "May");
    let d = sentences(deny, "May never");
    html! {
        ul.words {
            @for s in &a { (s) }
            @for s in &d { (s) }
            li { @if a.is_empty() { "May do nothing: the policy allows no command." }
                 @else if !d.is_empty() { "A \"never\" wins over a \"may\"; anything else is refused." }
                 @else { "Anything else is refused." } }
        }
    }
}

/// What an identity of `privilege` may do, without its policy.
pub(super) fn privilege(privilege: &str, enclave: &str) -> Markup {
    html! {
        @match privilege {
            "SysAdmin" => { "May do anything: run the cluster and every enclave." }
            "Admin" => { "May do anything in the enclave " code { (enclave) } ", nothing outside it." }
            _ => { "May do what its policy allows in the enclave " code { (enclave) } "." }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pats: &[&str]) -> RuleSet {
        RuleSet {
            rules: pats
                .iter()
                .map(|p| (p.to_string(), Default::default()))
                .collect(),
        }
    }

    #[test]
    fn policies_read_as_sentences() {
        let allow = HashMap::from([
            ("KEY:GENERATE".to_string(), set(&["app-*", "k1"])),
            ("KEY:*".to_string(), set(&["*"])),
        ]);
        let deny = HashMap::from([("KEY:DELETE".to_string(), set(&["a?c"]))]);
        let m = policy(&allow, &deny).into_string();
        assert!(
            m.contains("May run every <code>KEY</code> command on any key."),
            "{m}"
        );
        assert!(
            m.contains("May generate data keys with keys whose name starts with <code>app-</code> or the key <code>k1</code>."),
            "{m}"
        );
        assert!(
            m.contains("May never delete keys matching <code>a?c</code>."),
            "{m}"
        );
        assert!(m.contains("wins"), "{m}");
        let none = policy(&HashMap::new(), &HashMap::new()).into_string();
        assert!(none.contains("May do nothing"), "{none}");
    }
}
