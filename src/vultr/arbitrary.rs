//! Proptest strategies for the parsers' property tests: arbitrary bytes, arbitrary JSON
//! (leaning towards the field names Vultr uses, so that random documents reach the
//! interesting branches), and expected documents with a few fields mutated.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Field names the parsers look for, mixed into random objects.
const KEYS: &[&str] = &[
    "id",
    "name",
    "email",
    "display_name",
    "users",
    "groups",
    "policies",
    "policy",
    "user",
    "policy_user_relationships",
    "policy_group_relationships",
    "role_policy_relationships",
    "roles",
    "user_id",
    "group_id",
    "policy_id",
    "meta",
    "links",
    "next",
    "prev",
    "total",
    "error",
    "status",
];

/// Strings: empty, blank, plausible IDs and cursors, and anything at all.
pub(crate) fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(" ".to_owned()),
        Just("62948e0d-b09d-4d08-9554-3985b635cb17".to_owned()),
        "[a-z0-9]{1,8}",
        any::<String>(),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => any_string(),
    ]
}

/// Any JSON value, up to a few levels deep.
pub(crate) fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("JSON has no NaN or infinity", |f| {
            serde_json::Number::from_f64(f).map(Value::Number)
        }),
        any_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Raw bytes: random ones, and JSON text cut short or with one byte changed.
pub(crate) fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        (any_json(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(v, at, byte)| {
            let mut text = v.to_string().into_bytes();
            if !text.is_empty() {
                let i = at.index(text.len());
                if byte % 2 == 0 {
                    text.truncate(i);
                } else {
                    text[i] = byte;
                }
            }
            text
        }),
        any_json().prop_map(|v| v.to_string().into_bytes()),
    ]
}

/// One change to a document, at a path chosen among the document's own.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(Value),
    Remove,
    Insert(String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => any_json().prop_map(Mutation::Replace),
        2 => Just(Mutation::Remove),
        1 => (key(), any_json()).prop_map(|(k, v)| Mutation::Insert(k, v)),
    ]
}

/// `doc` with one to three fields replaced by any JSON, removed, or added.
pub(crate) fn mutated(doc: Value) -> impl Strategy<Value = Value> {
    let mut paths = Vec::new();
    collect_paths(&doc, String::new(), &mut paths);
    prop::collection::vec((prop::sample::select(paths), mutation()), 1..4).prop_map(
        move |changes| {
            let mut doc = doc.clone();
            for (path, change) in changes {
                apply(&mut doc, &path, change);
            }
            doc
        },
    )
}

/// JSON pointers of every node of `v`, the root ("") included.
fn collect_paths(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let k = k.replace('~', "~0").replace('/', "~1");
                collect_paths(child, format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_paths(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Applies a change; a path that an earlier change removed is left alone.
fn apply(doc: &mut Value, path: &str, change: Mutation) {
    match change {
        Mutation::Replace(new) => {
            if let Some(target) = doc.pointer_mut(path) {
                *target = new;
            }
        }
        Mutation::Remove => {
            let Some((parent, last)) = path.rsplit_once('/') else {
                *doc = Value::Null;
                return;
            };
            let last = last.replace("~1", "/").replace("~0", "~");
            match doc.pointer_mut(parent) {
                Some(Value::Object(map)) => {
                    map.remove(&last);
                }
                Some(Value::Array(items)) => {
                    if let Ok(i) = last.parse::<usize>()
                        && i < items.len()
                    {
                        items.remove(i);
                    }
                }
                _ => {}
            }
        }
        Mutation::Insert(k, new) => match doc.pointer_mut(path) {
            Some(Value::Object(map)) => {
                map.insert(k, new);
            }
            Some(Value::Array(items)) => items.push(new),
            _ => {}
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use serde_json::json;

    #[test]
    fn mutations_change_the_document() {
        let doc = json!({"users": [{"id": "u1"}], "meta": {"links": {"next": "c"}}});
        let mut runner = TestRunner::deterministic();
        let strategy = mutated(doc.clone());
        let changed = (0..50)
            .filter(|_| strategy.new_tree(&mut runner).unwrap().current() != doc)
            .count();
        // A replacement can draw the same value; nearly every case must differ.
        assert!(
            changed > 40,
            "only {changed} of 50 mutated documents differ"
        );
    }

    #[test]
    fn remove_and_insert_reach_nested_fields() {
        let mut doc = json!({"a": [{"b": 1}, {"c/d": 2}]});
        apply(&mut doc, "/a/1/c~1d", Mutation::Remove);
        apply(&mut doc, "/a/0", Mutation::Insert("x".into(), json!(true)));
        apply(&mut doc, "/a/0/b", Mutation::Replace(json!("s")));
        assert_eq!(doc, json!({"a": [{"b": "s", "x": true}, {}]}));
    }
}
