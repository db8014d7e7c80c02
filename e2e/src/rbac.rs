//! Least privilege, checked: the permissions an RBAC role grants, the permissions a user
//! exercised according to the API server's audit log, and the difference both ways.
//!
//! A permission is written `verb group/resource[/subresource]` (`create miniautoml.io/datasets`,
//! `get pods` for the core group), as `kubectl auth can-i` names them.

use std::collections::BTreeSet;

use serde_json::Value;

/// `verb group/resource` as this module writes permissions.
pub fn permission(verb: &str, group: &str, resource: &str) -> String {
    if group.is_empty() {
        format!("{verb} {resource}")
    } else {
        format!("{verb} {group}/{resource}")
    }
}

/// Every permission the `rules` of a Role or ClusterRole (its JSON) grant, or `Err` naming a
/// wildcard or a rule on non-resource URLs: a least-privilege role lists what it needs.
pub fn granted(role: &Value) -> Result<BTreeSet<String>, String> {
    let strings = |rule: &Value, field: &str| -> Vec<String> {
        rule[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    };
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        if !strings(rule, "nonResourceURLs").is_empty() || !strings(rule, "resourceNames").is_empty() {
            return Err(format!("a rule this check does not model: {rule}"));
        }
        for group in strings(rule, "apiGroups") {
            for resource in strings(rule, "resources") {
                for verb in strings(rule, "verbs") {
                    if [&group, &resource, &verb].iter().any(|s| s.contains('*')) {
                        return Err(format!("a wildcard grants more than is used: {rule}"));
                    }
                    granted.insert(permission(&verb, &group, &resource));
                }
            }
        }
    }
    Ok(granted)
}

/// What `user` did according to audit log lines (JSON, one event per line) received at or
/// after `since` (RFC 3339 with microseconds, as the API server writes them).
#[derive(Debug, Default, PartialEq)]
pub struct Exercised {
    /// The permissions used by allowed requests.
    pub used: BTreeSet<String>,
    /// The permissions of requests authorization refused (403 without an `allow` decision).
    pub refused: BTreeSet<String>,
    /// Audit events of the user read.
    pub requests: usize,
}

/// Reads the events of `user` from audit log `lines` (other lines are skipped).
pub fn exercised<'a>(lines: impl IntoIterator<Item = &'a str>, user: &str, since: &str) -> Exercised {
    let mut exercised = Exercised::default();
    for line in lines {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let received = event["requestReceivedTimestamp"].as_str().unwrap_or_default();
        let verb = event["verb"].as_str().unwrap_or_default();
        // A request is logged when it completes; a watch also when it starts (it may run for
        // as long as the operator does).
        let logged = match event["stage"].as_str() {
            Some("ResponseComplete") => verb != "watch",
            Some("ResponseStarted") => verb == "watch",
            _ => false,
        };
        if event["user"]["username"] != user || received < since || !logged {
            continue;
        }
        // Non-resource requests (discovery, /version) are every user's.
        let Some(object) = event["objectRef"].as_object() else {
            continue;
        };
        let text = |field: &str| object.get(field).and_then(Value::as_str).unwrap_or_default();
        let resource = match text("subresource") {
            "" => text("resource").to_string(),
            sub => format!("{}/{sub}", text("resource")),
        };
        let used = permission(verb, text("apiGroup"), &resource);
        exercised.requests += 1;
        let code = event["responseStatus"]["code"].as_u64().unwrap_or_default();
        // A 403 that authorization allowed was refused by admission (such as a write into a
        // namespace being deleted): the permission was granted and used.
        let authorized = event["annotations"]["authorization.k8s.io/decision"] == "allow";
        if code == 403 && !authorized {
            exercised.refused.insert(used);
            continue;
        }
        if code == 403 {
            exercised.used.insert(used);
            continue;
        }
        // A server-side apply that made the object was authorized as a create too (the API
        // server checks it; the log records the request's verb, patch).
        if verb == "patch" && code == 201 {
            exercised
                .used
                .insert(permission("create", text("apiGroup"), &resource));
        }
        exercised.used.insert(used);
    }
    exercised
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rules_expand_into_permissions() {
        let role = json!({"rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            {"apiGroups": ["miniautoml.io"], "resources": ["datasets/status"], "verbs": ["patch"]},
        ]});
        assert_eq!(
            granted(&role).unwrap(),
            BTreeSet::from([
                "get pods".to_string(),
                "list pods".into(),
                "patch miniautoml.io/datasets/status".into()
            ])
        );
        let wildcard = json!({"rules": [{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}]});
        assert!(granted(&wildcard).unwrap_err().contains("wildcard"));
        let named = json!({"rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["x"], "verbs": ["get"]}]});
        assert!(granted(&named).is_err());
    }

    #[test]
    fn audit_events_of_the_user_since_the_start_count() {
        let user = "system:serviceaccount:ml:operator";
        let event = |user: &str, at: &str, stage: &str, verb: &str, object: Value, code: u16| {
            json!({"kind": "Event", "stage": stage, "verb": verb, "user": {"username": user},
                   "requestReceivedTimestamp": at, "objectRef": object, "responseStatus": {"code": code}})
            .to_string()
        };
        let pods = json!({"resource": "pods", "namespace": "ml", "apiVersion": "v1"});
        let status = json!({"resource": "datasets", "subresource": "status", "apiGroup": "miniautoml.io"});
        let lines = [
            event(
                user,
                "2026-12-02T10:00:00.000001Z",
                "ResponseComplete",
                "list",
                pods.clone(),
                200,
            ),
            event(
                user,
                "2026-12-02T10:00:00.000002Z",
                "ResponseStarted",
                "watch",
                pods.clone(),
                200,
            ),
            event(
                user,
                "2026-12-02T10:00:00.000003Z",
                "ResponseComplete",
                "patch",
                status,
                200,
            ),
            event(
                user,
                "2026-12-02T10:00:00.000004Z",
                "ResponseComplete",
                "delete",
                pods.clone(),
                403,
            ),
            // A server-side apply that created: patch and create.
            event(
                user,
                "2026-12-02T10:00:00.000005Z",
                "ResponseComplete",
                "patch",
                json!({"resource": "services"}),
                201,
            ),
            // Before the start, another user, not JSON, a non-resource request: not counted.
            event(
                user,
                "2026-12-02T09:59:59.000000Z",
                "ResponseComplete",
                "create",
                pods.clone(),
                201,
            ),
            event(
                "admin",
                "2026-12-02T10:00:01.000000Z",
                "ResponseComplete",
                "create",
                pods,
                201,
            ),
            "not json".into(),
            json!({"stage": "ResponseComplete", "verb": "get", "user": {"username": user},
                   "requestReceivedTimestamp": "2026-12-02T10:00:02.000000Z", "requestURI": "/version"})
            .to_string(),
        ];
        // Allowed by RBAC, refused by admission (a namespace being deleted): used, not refused.
        let mut terminating: Value = serde_json::from_str(&event(
            user,
            "2026-12-02T10:00:00.000006Z",
            "ResponseComplete",
            "patch",
            json!({"resource": "secrets", "namespace": "gone"}),
            403,
        ))
        .unwrap();
        terminating["annotations"] = json!({"authorization.k8s.io/decision": "allow"});
        let lines: Vec<String> = lines.into_iter().chain([terminating.to_string()]).collect();
        let exercised = exercised(
            lines.iter().map(String::as_str),
            user,
            "2026-12-02T10:00:00.000000Z",
        );
        assert_eq!(
            exercised.used,
            BTreeSet::from([
                "create services".to_string(),
                "list pods".into(),
                "patch miniautoml.io/datasets/status".into(),
                "patch secrets".into(),
                "patch services".into(),
                "watch pods".into()
            ])
        );
        assert_eq!(exercised.refused, BTreeSet::from(["delete pods".to_string()]));
        assert_eq!(exercised.requests, 6);
    }
}
