//! Revision tags, as `istioctl tag` makes them: a tag is a MutatingWebhookConfiguration
//! `istio-revision-tag-<tag>` that injects pods selected by `istio.io/rev=<tag>` with the
//! revision it points at. The `default` tag also takes over what the default revision's
//! webhook selects (`istio-injection=enabled`, ...) and the validation of objects without a
//! revision label, and the default revision's own webhook is deactivated so that a pod is
//! injected once.
//!
//! Pure: renders the objects; [`super::cluster`] applies them.

use serde_json::{Value, json};

use super::labels;
use super::manifest::{default_webhooks, revision_webhooks, validating_webhook};
use crate::model::config::revision;

/// The MutatingWebhookConfiguration of a tag.
pub fn webhook_name(tag: &str) -> String {
    format!("istio-revision-tag-{tag}")
}

/// The label that makes a deactivated webhook match nothing (istioctl's).
pub const DEACTIVATED: (&str, &str) = ("istio.io/deactivated", "never-match");

/// The objects of tag `tag` pointing at `revision` in control plane namespace `namespace`.
pub fn render(tag: &str, revision: &str, namespace: &str) -> Vec<Value> {
    let service = revision::named("istiod", revision);
    let tag_labels = json!({
        labels::TAG: tag, labels::REVISION: revision::label(revision), "app": "sidecar-injector",
    });
    let webhooks = if tag == "default" {
        default_webhooks(&service, namespace, "default", "Never")
    } else {
        revision_webhooks(&service, namespace, tag, "Never")
    };
    let mut objects = vec![json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": webhook_name(tag), "labels": tag_labels},
        "webhooks": webhooks,
    })];
    if tag == "default" {
        let mut validator = validating_webhook(
            "istiod-default-validator",
            &service,
            namespace,
            vec![json!({"key": labels::REVISION, "operator": "DoesNotExist"})],
        );
        validator["metadata"]["labels"] = tag_labels;
        objects.push(validator);
    }
    objects
}

/// `webhook_config` with every webhook's selectors set to match nothing.
pub fn deactivated(mut webhook_config: Value) -> Value {
    let never = json!({"matchLabels": {DEACTIVATED.0: DEACTIVATED.1}});
    if let Some(hooks) = webhook_config["webhooks"].as_array_mut() {
        for hook in hooks {
            hook["namespaceSelector"] = never.clone();
            hook["objectSelector"] = never.clone();
        }
    }
    webhook_config
}

/// One row of `tag list`: the tag, its revision, and the namespaces that select it.
#[derive(Debug, Clone, PartialEq)]
pub struct TagRow {
    pub tag: String,
    pub revision: String,
    pub namespaces: Vec<String>,
}

/// `tag list`'s table (istioctl's columns).
pub fn table(rows: &[TagRow]) -> String {
    let mut lines = vec![[
        "TAG".to_string(),
        "REVISION".to_string(),
        "NAMESPACES".to_string(),
    ]];
    for r in rows {
        lines.push([r.tag.clone(), r.revision.clone(), r.namespaces.join(",")]);
    }
    let widths: Vec<usize> = (0..3)
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    lines
        .iter()
        .map(|l| {
            format!(
                "{:w0$}   {:w1$}   {}",
                l[0],
                l[1],
                l[2],
                w0 = widths[0],
                w1 = widths[1]
            )
            .trim_end()
            .to_string()
                + "\n"
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::manifest::tests::selected_by;

    #[test]
    fn the_default_tag_takes_the_injection_label_and_points_at_its_revision() {
        let objects = render("default", "canary", "istio-system");
        let mwc = &objects[0];
        assert_eq!(mwc["metadata"]["name"], "istio-revision-tag-default");
        assert_eq!(mwc["metadata"]["labels"]["istio.io/rev"], "canary");
        for hook in mwc["webhooks"].as_array().unwrap() {
            assert_eq!(hook["clientConfig"]["service"]["name"], "istiod-canary");
        }
        assert_eq!(
            selected_by(mwc, &[("istio-injection", "enabled")], &[]),
            ["namespace.sidecar-injector.istio.io"]
        );
        assert_eq!(
            selected_by(mwc, &[("istio.io/rev", "default")], &[]),
            ["rev.namespace.sidecar-injector.istio.io"]
        );
        assert!(
            selected_by(
                mwc,
                &[("istio-injection", "enabled")],
                &[("sidecar.istio.io/inject", "false")]
            )
            .is_empty(),
            "a pod that opts out is never injected"
        );
        assert!(
            selected_by(mwc, &[], &[]).is_empty(),
            "unlabelled: not injected"
        );
        assert_eq!(
            objects[1]["metadata"]["name"], "istiod-default-validator",
            "the default tag validates unlabelled objects"
        );
    }

    #[test]
    fn another_tag_selects_only_its_own_label_and_deactivation_matches_nothing() {
        let mwc = &render("prod", "canary", "istio-system")[0];
        assert_eq!(
            selected_by(mwc, &[("istio.io/rev", "prod")], &[]),
            ["rev.namespace.sidecar-injector.istio.io"]
        );
        assert!(selected_by(mwc, &[("istio-injection", "enabled")], &[]).is_empty());
        assert!(selected_by(mwc, &[("istio.io/rev", "canary")], &[]).is_empty());
        let off = deactivated(render("default", "", "istio-system")[0].clone());
        assert!(selected_by(&off, &[("istio-injection", "enabled")], &[]).is_empty());
        assert!(selected_by(&off, &[], &[("sidecar.istio.io/inject", "true")]).is_empty());
    }

    #[test]
    fn the_table_aligns_istioctls_columns() {
        let out = table(&[
            TagRow {
                tag: "default".into(),
                revision: "canary".into(),
                namespaces: vec!["testns1".into(), "testns2".into()],
            },
            TagRow {
                tag: "prod".into(),
                revision: "1-24".into(),
                namespaces: vec![],
            },
        ]);
        assert_eq!(
            out,
            "TAG       REVISION   NAMESPACES\ndefault   canary     testns1,testns2\nprod      1-24\n"
        );
    }
}
