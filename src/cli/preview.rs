//! `navarch preview -f FILE...` (beyond istiod): before anything is applied, which connected
//! proxies' config the files' routing config would change and how (a diff per proxy, resource
//! by resource, as `proxy-config --diff` shows it), the analyzer messages the change adds,
//! and what was not previewed (workloads and registry kinds). Exit 79 when a message is an
//! Error (a rejected document, a reference to nothing), 0 otherwise.
//!
//! Owns reading the files and printing; the control plane computes the preview
//! (`POST /debug/preview`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use super::analyze::ANALYZE_FAILURE;
use super::proxy_config::{DiffWords, Dump, diff};

/// A preview's words: the new side is what the proxy would be sent, the old what it has.
const PREVIEW_WORDS: DiffWords = DiffWords {
    added: "added",
    changed: "changed",
    removed: "removed",
};

#[derive(clap::Args, Debug)]
pub struct PreviewArgs {
    /// Files or directories (recursively) with the changes.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// The control plane's debug URL.
    #[arg(long, env = "NAVARCH_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// text or json.
    #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

pub fn run(args: PreviewArgs) -> ExitCode {
    match super::runtime().and_then(|rt| rt.block_on(preview(&args))) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn preview(args: &PreviewArgs) -> anyhow::Result<ExitCode> {
    let mut paths = Vec::new();
    for p in &args.files {
        if p.is_dir() {
            let mut found = crate::sources::files::config_files(std::slice::from_ref(p))?;
            found.sort();
            paths.extend(found);
        } else {
            paths.push(p.clone());
        }
    }
    let mut files = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        files.push(json!({"name": path.display().to_string(), "text": text}));
    }
    let url = format!("{}/debug/preview", args.server.trim_end_matches('/'));
    let resp = reqwest::Client::new()
        .post(&url)
        .json(&json!({ "files": files }))
        .send()
        .await
        .with_context(|| {
            format!("POST {url}: is `navarch discovery` running there? pass --server URL")
        })?;
    let status = resp.status();
    anyhow::ensure!(
        status.is_success(),
        "POST {url}: HTTP {status}: {}",
        resp.text().await.unwrap_or_default().trim()
    );
    let result: Value = resp.json().await.context("the preview is not JSON")?;
    let messages = result["messages"].as_array().cloned().unwrap_or_default();
    let failed = messages.iter().any(|m| m["level"] == "Error");
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", render(&result));
    }
    Ok(if failed {
        ExitCode::from(ANALYZE_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

/// The preview as text: per changed proxy its diff, then the proxies left as they are, what
/// was not previewed, and the messages.
pub fn render(result: &Value) -> String {
    let mut out = String::new();
    let changed = result["changed"].as_array().cloned().unwrap_or_default();
    if changed.is_empty() {
        out.push_str("No connected proxy's config would change.\n");
    }
    for c in &changed {
        let before = Dump::new(c["before"].clone(), None);
        let after = Dump::new(c["after"].clone(), None);
        out.push_str(&format!(
            "{} would change:\n",
            c["proxy"].as_str().unwrap_or_default()
        ));
        for line in diff(&after, &before, "all", &PREVIEW_WORDS).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    let list = |key: &str| -> Vec<String> {
        result[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let unchanged = list("unchanged");
    if !unchanged.is_empty() {
        out.push_str(&format!("Unchanged: {}\n", unchanged.join(", ")));
    }
    let skipped = list("skipped");
    if !skipped.is_empty() {
        out.push_str(&format!(
            "Not previewed (workload and registry objects; apply them to see their effect): {}\n",
            skipped.join(", ")
        ));
    }
    for m in result["messages"].as_array().into_iter().flatten() {
        let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
        let place = [s("origin"), s("reference")]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        out.push_str(&format!(
            "{} [{}] ({place}) {}\n",
            s("level"),
            s("code"),
            s("message")
        ));
    }
    out
}
