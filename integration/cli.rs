//! The CLI as users run it: `navarch agent` execs a real Envoy with the bootstrap it writes,
//! and `navarch bootstrap` output is accepted by Envoy's validator.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_execs_envoy_which_routes_traffic() {
    let net = 108;
    let sandbox = sandbox(net);
    let cp =
        ControlPlane::start(&[("sandbox.yaml", sandbox.as_str()), ("vs.yaml", VS_90_10)]).await;
    let _v1 = Upstream::start("v1", &format!("127.{net}.0.11:8080")).await;
    let _v2 = Upstream::start("v2", &format!("127.{net}.0.12:8080")).await;
    let work = cp.dir.path().join("agent");
    std::fs::create_dir_all(&work).unwrap();
    let admin_file = work.join("admin.txt");
    let ip = format!("127.{net}.0.21");
    let mut child = tokio::process::Command::new(navarch_bin())
        .args([
            "agent",
            "--ip",
            &ip,
            "--pod",
            "sleep",
            "--namespace",
            "testns1",
            "--labels",
            "app=sleep",
        ])
        .args([
            "--interception-mode",
            "NONE",
            "--admin-port",
            "0",
            "--xds-address",
            &cp.grpc.to_string(),
        ])
        .arg("-o")
        .arg(work.join("bootstrap.yaml"))
        .args([
            "--",
            "--disable-hot-restart",
            "-l",
            "warning",
            "--admin-address-path",
        ])
        .arg(&admin_file)
        .kill_on_drop(true)
        .spawn()
        .expect("run navarch agent");
    let admin = eventually(Duration::from_secs(20), || async {
        std::fs::read_to_string(&admin_file).is_ok_and(|s| !s.trim().is_empty())
    })
    .await;
    assert!(admin.is_some(), "Envoy started by `navarch agent` came up");
    let c = client();
    let listener = format!("{ip}:8000");
    let ok = eventually(Duration::from_secs(20), || {
        let (c, l) = (c.clone(), listener.clone());
        async move {
            match c
                .get(format!("http://{l}/headers"))
                .header("host", HOST)
                .send()
                .await
            {
                Ok(r) => r.status() == 200 && r.headers().contains_key("x-served-by"),
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(ok.is_some(), "traffic flows through the agent's Envoy");
    let status = cp.syncz().await;
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].proxy, "sleep.testns1");
    assert_eq!(status[0].proxy_type, "sidecar");
    assert_eq!(status[0].istio_version, "1.24.0");
    let _ = child.kill().await;
}

#[test]
fn bootstrap_output_is_valid_envoy_config() {
    let dir = tempfile::tempdir().unwrap();
    for (mode, delta) in [("NONE", false), ("REDIRECT", true)] {
        let path = dir.path().join(format!("b-{mode}.yaml"));
        let mut args = vec![
            "bootstrap",
            "--type",
            "sidecar",
            "--ip",
            "10.0.0.5",
            "--pod",
            "p",
            "--namespace",
            "ns",
            "--labels",
            "app=a,version=v1",
        ];
        args.extend([
            "--interception-mode",
            mode,
            "--xds-address",
            "istiod.istio-system.svc:15010",
        ]);
        if delta {
            args.push("--delta");
        }
        let out = std::process::Command::new(navarch_bin())
            .args(&args)
            .arg("-o")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("id: sidecar~10.0.0.5~p.ns~ns.svc.cluster.local"),
            "{text}"
        );
        assert!(
            text.contains(if delta {
                "api_type: DELTA_GRPC"
            } else {
                "api_type: GRPC"
            }),
            "{text}"
        );
        assert!(text.contains("set_node_on_first_message_only: true"));
        envoy_validate(&path);
    }
}
