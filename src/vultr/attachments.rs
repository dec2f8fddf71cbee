//! The two shapes of `GET /v2/policies/{id}/users` (resp. `/groups`):
//! govultr's `{"users":[{"id":..}]}` and the OpenAPI document's
//! `{"policy_user_relationships":[{"user_id":..}]}`; and of the role-first
//! `GET /v2/roles/{id}/policies`: `{"policies":[{"id":..}]}` and
//! `{"role_policy_relationships":[{"policy_id":..}]}`. Sources disagree, so accept both.

use serde_json::Value;

use super::pagination::{Page, next_cursor};
use crate::domain::SubjectKind;

/// Field names of one listing shape.
struct Shape {
    array: &'static str,
    id_field: &'static str,
}

fn shapes(kind: SubjectKind) -> [Shape; 2] {
    match kind {
        SubjectKind::User => [
            Shape {
                array: "users",
                id_field: "id",
            },
            Shape {
                array: "policy_user_relationships",
                id_field: "user_id",
            },
        ],
        SubjectKind::Group => [
            Shape {
                array: "groups",
                id_field: "id",
            },
            Shape {
                array: "policy_group_relationships",
                id_field: "group_id",
            },
        ],
        // A role's listing names its policies.
        SubjectKind::Role => [
            Shape {
                array: "policies",
                id_field: "id",
            },
            Shape {
                array: "role_policy_relationships",
                id_field: "policy_id",
            },
        ],
    }
}

/// The IDs of one page of an attachment listing, in whichever shape it comes: subject
/// IDs of a policy's user or group listing, policy IDs of a role's listing (`Role`).
/// A body with neither array, or an entry without a string ID, is an error: guessing
/// "empty" there could make verification believe a live grant is gone.
pub(crate) fn parse_attached_page(body: &Value, kind: SubjectKind) -> Result<Page<String>, String> {
    let mut found_any = false;
    let mut ids = Vec::new();
    for shape in shapes(kind) {
        let entries = match body.get(shape.array) {
            None => continue,
            Some(Value::Null) => {
                found_any = true;
                continue;
            }
            Some(Value::Array(entries)) => entries,
            Some(_) => return Err(format!("`{}` is not an array", shape.array)),
        };
        found_any = true;
        for entry in entries {
            let id = entry
                .get(shape.id_field)
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| {
                    format!(
                        "an entry of `{}` has no string `{}`",
                        shape.array, shape.id_field
                    )
                })?;
            ids.push(id.to_owned());
        }
    }
    if !found_any {
        let [a, b] = shapes(kind);
        return Err(format!(
            "the body has neither `{}` nor `{}`",
            a.array, b.array
        ));
    }
    Ok(Page {
        items: ids,
        next: next_cursor(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn govultr_user_shape() {
        let body = json!({
            "users":[{"id":"u1","name":"Alice","email":"a@x","first_name":"A","extra":1},{"id":"u2"}],
            "meta":{"total":3,"links":{"next":"n","prev":""}}
        });
        let page = parse_attached_page(&body, SubjectKind::User).unwrap();
        assert_eq!(page.items, vec!["u1", "u2"]);
        assert_eq!(page.next.as_deref(), Some("n"));
    }

    #[test]
    fn openapi_user_shape() {
        let body = json!({
            "policy_user_relationships":[
                {"user_id":"u1","policy_id":"p","policy_name":"x","date_assigned":"d","assigned_by":"b"}
            ],
            "meta":{"total":1,"links":{"next":"","prev":""}}
        });
        let page = parse_attached_page(&body, SubjectKind::User).unwrap();
        assert_eq!(page.items, vec!["u1"]);
        assert_eq!(page.next, None);
    }

    #[test]
    fn both_group_shapes() {
        let govultr = json!({"groups":[{"id":"g1","display_name":"ops"}],"meta":{}});
        let openapi = json!({"policy_group_relationships":[{"group_id":"g1","policy_id":"p"}]});
        for body in [govultr, openapi] {
            let page = parse_attached_page(&body, SubjectKind::Group).unwrap();
            assert_eq!(page.items, vec!["g1"], "{body}");
        }
    }

    #[test]
    fn both_role_policy_shapes() {
        let govultr = json!({
            "policies":[{"id":"p1","name":"dns-admin","policy_document":{"Statement":[]}},{"id":"p2"}],
            "meta":{"total":2,"links":{"next":"c2","prev":""}}
        });
        let openapi = json!({"role_policy_relationships":[
            {"policy_id":"p1","policy_name":"dns-admin","role_id":"r","role_name":"auditors"},
            {"policy_id":"p2"}
        ]});
        for body in [govultr, openapi] {
            let page = parse_attached_page(&body, SubjectKind::Role).unwrap();
            assert_eq!(page.items, vec!["p1", "p2"], "{body}");
        }
        // The role id of a relationship is not a policy id.
        assert!(
            parse_attached_page(
                &json!({"role_policy_relationships":[{"role_id":"r"}]}),
                SubjectKind::Role
            )
            .is_err()
        );
        assert!(parse_attached_page(&json!({"users":[]}), SubjectKind::Role).is_err());
        assert!(parse_attached_page(&json!({"policies":[]}), SubjectKind::User).is_err());
    }

    #[test]
    fn empty_listings() {
        for body in [
            json!({"users":[],"meta":{"links":{"next":""}}}),
            json!({"users":null}),
            json!({"policy_user_relationships":[]}),
        ] {
            let page = parse_attached_page(&body, SubjectKind::User).unwrap();
            assert!(page.items.is_empty(), "{body}");
        }
    }

    #[test]
    fn unknown_or_broken_shapes_are_errors() {
        // A group listing where a user listing is expected is not silently "empty".
        assert!(parse_attached_page(&json!({"groups":[]}), SubjectKind::User).is_err());
        assert!(parse_attached_page(&json!({"users":[{"name":"x"}]}), SubjectKind::User).is_err());
        assert!(
            parse_attached_page(
                &json!({"policy_user_relationships":[{"id":"u1"}]}),
                SubjectKind::User
            )
            .is_err()
        );
        assert!(parse_attached_page(&json!({"users":"u1"}), SubjectKind::User).is_err());
    }
}

/// Property tests: any attachment listing, in either shape, mutated or arbitrary, gives
/// exactly the IDs it lists or an error; never a panic, never an invented or dropped ID
/// (a dropped one would make verification believe a live grant is gone).
#[cfg(test)]
mod properties {
    use super::*;
    use crate::vultr::arbitrary::{any_bytes, any_json, mutated};
    use crate::vultr::response::decode;
    use proptest::prelude::*;
    use serde_json::json;

    fn documents() -> [Value; 6] {
        let meta = json!({"total": 2, "links": {"next": "c2", "prev": ""}});
        [
            json!({"users": [{"id": "u1", "email": "a@example.com"}, {"id": "u2"}],
                   "meta": meta}),
            json!({"policy_user_relationships": [
                       {"user_id": "u1", "policy_id": "p", "policy_name": "dns-admin",
                        "date_assigned": "2024-01-01T00:00:00+00:00", "assigned_by": "b"}],
                   "meta": meta}),
            json!({"groups": [{"id": "g1", "display_name": "ops"}], "meta": meta}),
            json!({"policy_group_relationships": [{"group_id": "g1", "policy_id": "p"}],
                   "meta": meta}),
            json!({"policies": [{"id": "p1", "name": "dns-admin"}], "meta": meta}),
            json!({"role_policy_relationships": [
                       {"policy_id": "p1", "policy_name": "dns-admin", "role_id": "r1"}],
                   "meta": meta}),
        ]
    }

    fn listing() -> impl Strategy<Value = Value> {
        let [a, b, c, d, e, f] = documents();
        prop_oneof![
            any_json(),
            mutated(a),
            mutated(b),
            mutated(c),
            mutated(d),
            mutated(e),
            mutated(f)
        ]
    }

    const KINDS: [SubjectKind; 3] = [SubjectKind::User, SubjectKind::Group, SubjectKind::Role];

    /// The IDs the body lists for `kind`, read independently of the parser; `None` if
    /// the body is not a usable listing of that kind.
    fn expected(body: &Value, kind: SubjectKind) -> Option<Vec<String>> {
        let pairs = match kind {
            SubjectKind::User => [("users", "id"), ("policy_user_relationships", "user_id")],
            SubjectKind::Group => [("groups", "id"), ("policy_group_relationships", "group_id")],
            SubjectKind::Role => [
                ("policies", "id"),
                ("role_policy_relationships", "policy_id"),
            ],
        };
        let mut ids = Vec::new();
        let mut present = false;
        for (array, field) in pairs {
            match body.get(array) {
                None => {}
                Some(Value::Null) => present = true,
                Some(Value::Array(entries)) => {
                    present = true;
                    for entry in entries {
                        let id = entry.get(field)?.as_str().filter(|id| !id.is_empty())?;
                        ids.push(id.to_owned());
                    }
                }
                Some(_) => return None,
            }
        }
        present.then_some(ids)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn listings_give_exactly_their_ids_or_an_error(body in listing()) {
            for kind in KINDS {
                let parsed = parse_attached_page(&body, kind);
                let oracle = expected(&body, kind);
                match (&parsed, &oracle) {
                    (Ok(page), Some(ids)) => prop_assert_eq!(&page.items, ids),
                    (Err(_), None) => {}
                    _ => prop_assert!(
                        false,
                        "{:?} listing {}: parser {:?}, expected {:?}",
                        kind, body, parsed, oracle
                    ),
                }
                if let Ok(page) = parsed {
                    prop_assert_eq!(page.next, next_cursor(&body));
                }
            }
        }

        #[test]
        fn listing_bytes_never_panic(bytes in any_bytes()) {
            if let Ok(body) = decode::<Value>("GET /v2/policies/{policy_id}/users", &bytes) {
                for kind in KINDS {
                    let _ = parse_attached_page(&body, kind);
                }
            }
        }
    }
}
