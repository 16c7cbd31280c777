//! `manifest generate`, `install`, `verify-install`, `uninstall`, `tag` and `operator`: the
//! istioctl commands of the install chapter, with istioctl's flags and output. Reads files
//! and flags, prints progress; the work is [`crate::install`]'s.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::install::cluster::{self, Installer, describe};
use crate::install::manifest::{self, Manifest};
use crate::install::spec::{self, InstallSpec, Source};
use crate::install::{operator, tag};
use crate::model::config::revision;

/// The configuration flags `manifest generate`, `install` and `verify-install` share.
#[derive(Debug, Args, Clone, Default)]
pub struct SpecArgs {
    /// IstioOperator YAML files, overlaid in order on the profile (repeatable).
    #[arg(short = 'f', long = "filename")]
    pub filenames: Vec<PathBuf>,
    /// PATH=VALUE overrides of the IstioOperator spec, e.g. `meshConfig.accessLogFile=/dev/stdout`
    /// or `profile=demo` (repeatable; applied after the files).
    #[arg(short = 's', long = "set")]
    pub sets: Vec<String>,
    /// The control plane revision (the same as `--set revision=...`).
    #[arg(short = 'r', long)]
    pub revision: Option<String>,
}

impl SpecArgs {
    /// The install configuration these flags describe.
    pub fn build(&self) -> anyhow::Result<InstallSpec> {
        let texts: Vec<(String, String)> = self
            .filenames
            .iter()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map(|t| (p.display().to_string(), t))
                    .with_context(|| format!("reading {}", p.display()))
            })
            .collect::<anyhow::Result<_>>()?;
        let revision = self.revision.as_ref().map(|r| format!("revision={r}"));
        let mut sources: Vec<Source> = texts
            .iter()
            .map(|(origin, text)| Source::File { origin, text })
            .collect();
        sources.extend(self.sets.iter().map(|s| Source::Set(s)));
        if let Some(r) = &revision {
            sources.push(Source::Set(r));
        }
        Ok(spec::build(&sources)?)
    }
}

#[derive(Debug, Subcommand, Clone)]
pub enum ManifestCommand {
    /// Print the YAML of an install (CRDs, control plane, gateways) for `kubectl apply -f -`.
    Generate(SpecArgs),
}

#[derive(Debug, Args, Clone)]
pub struct ClusterArgs {
    /// The cluster's kubeconfig (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "NAVARCH_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct InstallArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long = "skip-confirmation")]
    pub yes: bool,
    /// How long to wait for the installed Deployments to become ready.
    #[arg(long, default_value = "5m", value_parser = super::parse_go_duration)]
    pub readiness_timeout: Duration,
    /// Apply and return without waiting for readiness.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args, Clone)]
pub struct VerifyArgs {
    /// Manifests (as `manifest generate` writes them) or IstioOperator files to check against;
    /// without one, the install the other flags describe.
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args, Clone)]
pub struct UninstallArgs {
    /// Remove every revision, the CRDs, the revision tags and the namespace.
    #[arg(long)]
    pub purge: bool,
    /// Remove this revision's control plane only.
    #[arg(short = 'r', long)]
    pub revision: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long = "skip-confirmation")]
    pub yes: bool,
}

#[derive(Debug, Subcommand, Clone)]
pub enum TagCommand {
    /// Point a revision tag at a revision (`default` also takes the `istio-injection` label).
    Set {
        tag: String,
        #[arg(short = 'r', long)]
        revision: String,
        /// Move an existing tag.
        #[arg(long)]
        overwrite: bool,
        #[arg(
            long = "istioNamespace",
            alias = "istio-namespace",
            short = 'i',
            default_value = "istio-system"
        )]
        istio_namespace: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// List the tags, their revisions and the namespaces that use them.
    List {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Remove a tag.
    Remove {
        tag: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Debug, Args, Clone)]
pub struct OperatorArgs {
    #[command(subcommand)]
    pub action: Option<OperatorCommand>,
    /// (the controller) Namespaces whose IstioOperator resources are reconciled.
    #[arg(
        long = "watched-namespaces",
        alias = "watchedNamespaces",
        env = "WATCH_NAMESPACE",
        value_delimiter = ',',
        default_value = "istio-system"
    )]
    pub watched_namespaces: Vec<String>,
    /// (the controller) Address of `/ready`.
    #[arg(long, default_value = "0.0.0.0:8383")]
    pub addr: std::net::SocketAddr,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Subcommand, Clone)]
pub enum OperatorCommand {
    /// Install the operator into `istio-operator`.
    Init {
        /// Namespaces whose IstioOperator resources it reconciles.
        #[arg(
            long = "watchedNamespaces",
            alias = "watched-namespaces",
            value_delimiter = ',',
            default_value = "istio-system"
        )]
        watched_namespaces: Vec<String>,
        #[arg(long, default_value = "navarch")]
        hub: String,
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        tag: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Remove the operator (what it installed stays).
    Remove {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

/// `navarch manifest generate`.
pub fn run_manifest(cmd: ManifestCommand) -> anyhow::Result<()> {
    let ManifestCommand::Generate(args) = cmd;
    let spec = args.build()?;
    print!("{}", manifest::render(&spec).to_yaml());
    Ok(())
}

fn confirm(question: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "{question} needs confirmation: pass -y (--skip-confirmation) to go ahead without asking"
        );
    }
    print!("{question} Proceed? (y/N) ");
    std::io::stdout().flush().ok();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        bail!("cancelled")
    }
}

/// `navarch install`.
pub async fn run_install(args: InstallArgs) -> anyhow::Result<()> {
    let spec = args.spec.build()?;
    confirm(
        &format!(
            "This will install the navarch {} profile {:?} (revision {:?}) into the cluster.",
            env!("CARGO_PKG_VERSION"),
            spec.profile,
            spec.revision_label()
        ),
        args.yes,
    )?;
    let client = cluster::client(args.cluster.kubeconfig.as_deref()).await?;
    let installer = Installer::new(client);
    let manifest = manifest::render(&spec);
    install_manifest(
        &installer,
        &spec,
        &manifest,
        args.readiness_timeout,
        args.no_wait,
    )
    .await?;
    println!("✔ Installation complete");
    Ok(())
}

async fn install_manifest(
    installer: &Installer,
    spec: &InstallSpec,
    manifest: &Manifest,
    timeout: Duration,
    no_wait: bool,
) -> anyhow::Result<()> {
    let mut applied = |obj: &Value| println!("  applied {}", describe(obj));
    let mut done = |c: manifest::ComponentName| println!("✔ {}", c.installed_line());
    installer
        .apply_manifest(manifest, &mut applied, &mut done)
        .await?;
    let mut pruned = |what: &str| println!("  pruned {what} (no longer in the configuration)");
    installer.prune(spec, manifest, &mut pruned).await?;
    if no_wait {
        return Ok(());
    }
    let deployments: Vec<&Value> = manifest
        .objects()
        .filter(|o| o["kind"] == "Deployment")
        .collect();
    println!(
        "waiting up to {}s for {} Deployment(s) to become ready",
        timeout.as_secs(),
        deployments.len()
    );
    let mut progress = |pending: &[String]| println!("  waiting: {}", pending.join("; "));
    installer
        .wait_until(&deployments, timeout, &mut progress)
        .await?;
    Ok(())
}

/// The objects `verify-install` checks: those of each `-f` manifest, or of the install the
/// flags (and any `-f` IstioOperator files) describe.
fn verify_objects(args: &SpecArgs) -> anyhow::Result<Vec<Value>> {
    let mut manifests = Vec::new();
    let mut operator_files = Vec::new();
    for path in &args.filenames {
        let docs = read_manifest(path)?;
        if docs.len() == 1 && docs[0]["kind"] == "IstioOperator" {
            operator_files.push(path.clone());
        } else {
            manifests.extend(docs);
        }
    }
    if !manifests.is_empty() {
        return Ok(manifests);
    }
    let spec = SpecArgs {
        filenames: operator_files,
        ..args.clone()
    }
    .build()?;
    Ok(manifest::render(&spec).objects().cloned().collect())
}

/// `navarch verify-install`: exit status 1 when anything is missing or not ready.
pub async fn run_verify(args: VerifyArgs) -> anyhow::Result<()> {
    let objects = verify_objects(&args.spec)?;
    let client = cluster::client(args.cluster.kubeconfig.as_deref()).await?;
    let installer = Installer::new(client);
    let checks = installer.verify(&objects).await?;
    let mut failed = 0;
    for (name, problem) in &checks {
        match problem {
            None => println!("✔ {name} checked successfully"),
            Some(p) => {
                failed += 1;
                println!("✘ {name}: {p}");
            }
        }
    }
    let count = |kind: &str| objects.iter().filter(|o| o["kind"] == kind).count();
    println!(
        "Checked {} custom resource definitions",
        count("CustomResourceDefinition")
    );
    println!("Checked {} Istio Deployments", count("Deployment"));
    if failed > 0 {
        bail!(
            "✘ Istio installation failed: {failed} of {} resources missing or not ready; \
             `navarch install` with the same flags applies them again",
            checks.len()
        );
    }
    println!("✔ Istio is installed and verified successfully");
    Ok(())
}

/// `navarch uninstall`.
pub async fn run_uninstall(args: UninstallArgs) -> anyhow::Result<()> {
    let revision = match (&args.revision, args.purge) {
        (Some(r), _) => revision::label(r).to_string(),
        (None, true) => String::new(),
        (None, false) => bail!(
            "at least one of --revision or --purge is needed: --revision R removes one \
             control plane, --purge removes everything navarch installed"
        ),
    };
    let what = if args.purge {
        "every navarch control plane, the Istio CRDs (and with them every Istio resource) and \
         the revision tags"
            .to_string()
    } else {
        format!("the control plane of revision {revision:?}")
    };
    confirm(&format!("This will remove {what}."), args.yes)?;
    let client = cluster::client(args.cluster.kubeconfig.as_deref()).await?;
    let installer = Installer::new(client);
    let mut removed = |w: &str| println!("  removed {w}");
    let deleted = installer
        .uninstall(&revision, args.purge, &mut removed)
        .await?;
    println!("✔ Uninstall complete: {} objects removed", deleted.len());
    Ok(())
}

/// `navarch tag set|list|remove`.
pub async fn run_tag(cmd: TagCommand) -> anyhow::Result<()> {
    match cmd {
        TagCommand::Set {
            tag: name,
            revision,
            overwrite,
            istio_namespace,
            cluster: c,
        } => {
            let installer = Installer::new(cluster::client(c.kubeconfig.as_deref()).await?);
            for what in installer
                .set_tag(&name, &revision, &istio_namespace, overwrite)
                .await?
            {
                println!("  applied {what}");
            }
            println!(
                "Revision tag {name:?} created, referencing control plane revision {:?}. To \
                 enable injection using this revision tag, use 'kubectl label namespace \
                 <NAMESPACE> istio.io/rev={name}'",
                revision::label(&revision)
            );
        }
        TagCommand::List { cluster: c } => {
            let installer = Installer::new(cluster::client(c.kubeconfig.as_deref()).await?);
            print!("{}", tag::table(&installer.list_tags().await?));
        }
        TagCommand::Remove {
            tag: name,
            cluster: c,
        } => {
            let installer = Installer::new(cluster::client(c.kubeconfig.as_deref()).await?);
            for what in installer.remove_tag(&name).await? {
                println!("  removed {what}");
            }
            println!("Revision tag {name} removed");
        }
    }
    Ok(())
}

/// `navarch operator [init|remove]`.
pub async fn run_operator(args: OperatorArgs) -> anyhow::Result<()> {
    match args.action {
        Some(OperatorCommand::Init {
            watched_namespaces,
            hub,
            tag,
            cluster: c,
        }) => {
            let installer = Installer::new(cluster::client(c.kubeconfig.as_deref()).await?);
            println!(
                "Operator controller will watch namespaces: {}",
                watched_namespaces.join(", ")
            );
            for obj in operator::render(&watched_namespaces, &hub, &tag) {
                installer.apply(&obj).await?;
                println!("  applied {}", describe(&obj));
            }
            println!("✔ Istio operator installed");
            Ok(())
        }
        Some(OperatorCommand::Remove { cluster: c }) => {
            let installer = Installer::new(cluster::client(c.kubeconfig.as_deref()).await?);
            let mut removed = |w: &str| println!("  removed {w}");
            installer.remove_operator(&mut removed).await?;
            println!("✔ Removal complete");
            Ok(())
        }
        None => run_operator_controller(args).await,
    }
}

async fn run_operator_controller(args: OperatorArgs) -> anyhow::Result<()> {
    let client = match &args.cluster.kubeconfig {
        Some(path) => cluster::client(Some(path)).await?,
        None => crate::sources::kube::client(None).await?,
    };
    let state = Arc::new(cluster::OperatorState::default());
    let ready = state.clone();
    let app = axum::Router::new().route(
        "/ready",
        axum::routing::get(move || {
            let ready = ready.clone();
            async move {
                if ready.ready.load(std::sync::atomic::Ordering::Relaxed) {
                    (http::StatusCode::OK, "ready\n")
                } else {
                    (
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        "listing IstioOperator resources\n",
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {} (pick another with --addr)", args.addr))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the operator's /ready endpoint stopped");
        }
    });
    cluster::run_operator(client, args.watched_namespaces, state).await?;
    Ok(())
}

/// The documents of a YAML file (a manifest, or one IstioOperator).
fn read_manifest(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .with_context(|| format!("{}: not YAML", path.display()))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

#[derive(Debug, Args, Clone)]
pub struct KubeInjectArgs {
    /// The Kubernetes YAML to inject (`-` for stdin).
    #[arg(short = 'f', long = "filename")]
    pub filename: PathBuf,
    /// Write here instead of stdout.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// The injector `config` to use (the `config` key of istio-sidecar-injector) instead of
    /// the install's.
    #[arg(long = "injectConfigFile", alias = "inject-config-file")]
    pub inject_config_file: Option<PathBuf>,
    /// The injector `values` (JSON) instead of the install's.
    #[arg(long = "valuesFile", alias = "values-file")]
    pub values_file: Option<PathBuf>,
    /// The install the injector config comes from (profile, `--set`, `-r`); `-f` here is the
    /// input, so IstioOperator files are not taken.
    #[arg(short = 's', long = "set")]
    pub sets: Vec<String>,
    #[arg(short = 'r', long)]
    pub revision: Option<String>,
}

/// `navarch kube-inject`: the webhook's injection, offline, with the injector config the
/// install (or the given files) has.
pub fn run_kube_inject(args: KubeInjectArgs) -> anyhow::Result<()> {
    let spec = SpecArgs {
        filenames: Vec::new(),
        sets: args.sets.clone(),
        revision: args.revision.clone(),
    }
    .build()?;
    let rendered = manifest::render(&spec);
    let config_map = rendered
        .objects()
        .find(|o| {
            o["kind"] == "ConfigMap"
                && o["metadata"]["name"] == spec.revisioned("istio-sidecar-injector").as_str()
        })
        .cloned()
        .unwrap_or(Value::Null);
    let read = |path: &Option<PathBuf>, key: &str| -> anyhow::Result<String> {
        match path {
            Some(p) => {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            }
            None => Ok(config_map["data"][key]
                .as_str()
                .unwrap_or_default()
                .to_string()),
        }
    };
    let injector = crate::inject::Injector::from_config_map(
        &read(&args.inject_config_file, "config")?,
        &read(&args.values_file, "values")?,
        &spec.revision,
        &spec.xds_address(),
    )?;
    let text = if args.filename.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(&args.filename)
            .with_context(|| format!("reading {}", args.filename.display()))?
    };
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .with_context(|| format!("{}: not YAML", args.filename.display()))?;
    let mut out = Vec::new();
    for (i, doc) in docs.iter().filter(|d| !d.is_null()).enumerate() {
        let (injected, _) = crate::inject::inject_document(&injector, doc).with_context(|| {
            format!(
                "{} (document {}): {} {}",
                args.filename.display(),
                i + 1,
                doc["kind"].as_str().unwrap_or("?"),
                doc["metadata"]["name"].as_str().unwrap_or("?")
            )
        })?;
        out.push(serde_saphyr::to_string(&injected)?);
    }
    let yaml = out.join("---\n");
    match &args.output {
        Some(p) => std::fs::write(p, yaml).with_context(|| format!("writing {}", p.display())),
        None => {
            print!("{yaml}");
            Ok(())
        }
    }
}
