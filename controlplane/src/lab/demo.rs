//! `weft demo`: a real mesh on this machine, built, exercised, verified and torn down.
//!
//! Layout (namespace `apps`, trust domain `cluster.local`):
//!
//! | pod | address | service account | runs |
//! |---|---|---|---|
//! | load-1 | 198.18.0.10 | load | the traffic generator |
//! | web-1, web-2 | 198.18.0.11, .12 | web | HTTP servers on :8080, Service `web` 198.19.0.10:80 |
//! | db-0 | 198.18.0.13 | db | a server-speaks-first banner on :5432, Service `db` 198.19.0.20:5432 |
//! | job-1 | 198.18.0.14 | job | a Job: `weft-await --shutdown -- …` |
//!
//! Every step prints what it did; the run ends with golden metrics per pod, the edges
//! between identities, and the checks that prove the traffic was meshed (TLS on the veth,
//! identities in the metrics, the app seeing the client's address). `--report FILE`
//! writes all of it as JSON for the end-to-end tests.

use super::report::{self, Golden};
use super::{apps::LoadReport, check_interrupted, token_for, Binaries, Lab, LabError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const WEB_VIP: &str = "198.19.0.10:80";
pub const DB_VIP: &str = "198.19.0.20:5432";
const BANNER: &str = "220 db-0 ready";

/// The pods: (name, address, service account, labels).
const PODS: &[(&str, &str, &str, &str)] = &[
    ("load-1", "198.18.0.10", "load", "{app: load}"),
    ("web-1", "198.18.0.11", "web", "{app: web}"),
    ("web-2", "198.18.0.12", "web", "{app: web}"),
    ("db-0", "198.18.0.13", "db", "{app: db}"),
    ("job-1", "198.18.0.14", "job", "{app: job}"),
];

/// The controller's file-backend config for the layout.
pub fn config_yaml(tag: &str) -> String {
    let mut y = String::from("tokens:\n");
    for sa in ["load", "web", "db", "job"] {
        y += &format!(
            "  - {{token: {}, serviceAccount: {sa}, namespace: apps}}\n",
            token_for(tag, sa)
        );
    }
    y += "workloads:\n";
    for (name, ip, sa, labels) in PODS {
        let opaque = if *name == "db-0" {
            ", opaquePorts: [5432]"
        } else {
            ""
        };
        y += &format!(
            "  - {{name: {name}, namespace: apps, serviceAccount: {sa}, addresses: [{ip}], labels: {labels}, owner: {{kind: Deployment, name: {sa}}}{opaque}}}\n"
        );
    }
    y += "services:\n";
    y += "  - {name: web, namespace: apps, clusterIPs: [198.19.0.10], ports: [{port: 80, targetPort: 8080, protocol: http1}], selector: {app: web}, route: {retryOn: [5xx, connect], timeout: 5s}}\n";
    y += "  - {name: db, namespace: apps, clusterIPs: [198.19.0.20], ports: [{port: 5432, protocol: opaque}], selector: {app: db}}\n";
    y
}

#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    pub rate: u32,
    pub report: Option<PathBuf>,
    pub runner: Option<String>,
    /// Where the (foreign) binaries are; default: beside the running `weft`.
    pub bin_dir: Option<PathBuf>,
    pub dir: PathBuf,
}

/// Everything the demo saw, for people (printed) and tests (JSON).
#[derive(Debug, Default, Serialize)]
pub struct DemoReport {
    /// Pod → its identity and how long its proxy took to become ready.
    pub pods: BTreeMap<String, PodReport>,
    pub load: Option<LoadReport>,
    pub banner: Option<BannerReport>,
    pub wire: Option<WireReport>,
    pub job: Option<JobReport>,
    /// A request from load-1 to web-1's own pod address (not the Service).
    pub direct: Option<String>,
    /// The server identities load-1's proxy verified (outbound `server_id` labels).
    pub server_ids: Vec<String>,
    /// Pod → golden metrics of its proxy's inbound and outbound sides.
    pub golden: BTreeMap<String, BTreeMap<String, Golden>>,
    /// (client identity, server pod) → (HTTP requests, TCP connections).
    pub edges: Vec<Edge>,
}

#[derive(Debug, Default, Serialize)]
pub struct PodReport {
    pub identity: String,
    pub ready_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct BannerReport {
    pub text: String,
    pub ms: f64,
}

#[derive(Debug, Serialize)]
pub struct WireReport {
    pub interface: String,
    pub bytes: usize,
    /// A TLS record header (handshake or application data) was seen.
    pub tls_records: bool,
    /// Any of the app's own strings crossed in the clear.
    pub plaintext_seen: bool,
}

#[derive(Debug, Serialize)]
pub struct JobReport {
    pub exit_code: Option<i32>,
    pub proxy_exit_code: Option<i32>,
    pub proxy_exited_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Edge {
    pub client: String,
    pub server: String,
    pub requests: u64,
    pub tcp: u64,
}

/// `weft demo`: checks it can run, then runs, mapping failures to a clear message.
pub fn main(args: crate::cli::DemoArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    if let Err(why) = preflight() {
        eprintln!("weft demo: cannot build the namespace mesh: {why}");
        return ExitCode::from(69);
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("weft-demo-{}", std::process::id())));
    let opts = Options {
        duration: args.duration,
        rate: args.rate,
        report: args.report.clone(),
        runner: args.runner.clone(),
        bin_dir: args.bin_dir.clone(),
        dir,
    };
    super::catch_signals();
    match run(&opts) {
        Ok(rep) => {
            let failed = rep
                .load
                .as_ref()
                .map_or(1, |l| l.failed + u64::from(l.ok == 0));
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "weft demo: {failed} request(s) failed; logs are in {}",
                    opts.dir.display()
                );
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("weft demo: {e}; logs are in {}", opts.dir.display());
            ExitCode::from(1)
        }
    }
}

/// Builds the mesh, runs traffic, verifies, prints, and tears down.
pub fn run(opts: &Options) -> Result<DemoReport, LabError> {
    let tag = format!("wd{}", std::process::id() % 10000);
    let native = Binaries::beside_current_exe(None)?;
    let bins = match &opts.bin_dir {
        Some(dir) => Binaries::in_dir(dir, native.weft.clone(), opts.runner.clone())?,
        None => Binaries::beside_current_exe(opts.runner.clone())?,
    };
    say(&format!(
        "building a mesh in network namespaces (work dir {})",
        opts.dir.display()
    ));
    if let Some(r) = &opts.runner {
        say(&format!(
            "running weft-proxy, weft-init and weft-await from {} through {r}; the client pods' proxies (load-1, job-1) stay native because qemu-user cannot emulate SO_ORIGINAL_DST",
            bins.proxy.parent().map(|p| p.display().to_string()).unwrap_or_default()
        ));
    }
    let mut lab = Lab::start(&tag, bins, opts.dir.clone(), &config_yaml(&tag))?;
    lab.native = Some(native);
    say("controller running: trust anchor and issuer generated, proxy API on 198.18.0.1:8086");
    let mut rep = DemoReport::default();

    for (name, ip, sa, _) in PODS {
        check_interrupted()?;
        let started = Instant::now();
        let client = matches!(*name, "load-1" | "job-1");
        let i = lab.add_pod(name, ip, sa, true, client, &[])?;
        let ms = started.elapsed().as_millis() as u64;
        let identity = lab.pods[i].identity();
        say(&format!("{name} ({ip}): iptables set by weft-init, proxy ready with certificate {identity} in {ms} ms"));
        rep.pods.insert(
            name.to_string(),
            PodReport {
                identity,
                ready_ms: ms,
            },
        );
    }
    for (name, _) in [("web-1", 0), ("web-2", 0)] {
        if let Some(i) = lab.pod(name) {
            lab.start_app(i, &["http", "--name", name, "--listen", "0.0.0.0:8080"])?;
        }
    }
    if let Some(i) = lab.pod("db-0") {
        lab.start_app(i, &["banner", "--text", BANNER, "--listen", "0.0.0.0:5432"])?;
    }
    wait_listening(&lab, "web-1", 8080)?;
    wait_listening(&lab, "web-2", 8080)?;
    wait_listening(&lab, "db-0", 5432)?;
    say(&format!("apps running: web-1, web-2 behind Service web {WEB_VIP}; db-0 (speaks first) behind Service db {DB_VIP}"));

    let load = lab.pod("load-1").ok_or_else(|| missing("load-1"))?;
    // Capture on web-1's veth while traffic flows.
    let web1 = lab.pod("web-1").ok_or_else(|| missing("web-1"))?;
    let capture = start_capture(&lab, web1);
    let secs = opts.duration.as_secs().max(1).to_string();
    let rate = opts.rate.to_string();
    say(&format!(
        "traffic: load-1 → http://{WEB_VIP}/ at {rate}/s for {secs}s"
    ));
    let out = lab.run_in(
        load,
        &weft_args(
            &lab,
            &[
                "lab-app",
                "load",
                "--url",
                &format!("http://{WEB_VIP}/orders"),
                "--rate",
                &rate,
                "--duration",
                &format!("{secs}s"),
            ],
        ),
    )?;
    let load_report: Option<LoadReport> = serde_json::from_str(out.trim()).ok();
    if let Some(l) = &load_report {
        say(&format!(
            "load-1 got {} of {} responses ({} failed), by server {:?}; sample: {:?}",
            l.ok, l.sent, l.failed, l.by_server, l.sample
        ));
    }
    rep.load = load_report;
    check_interrupted()?;
    rep.wire = capture.and_then(|c| finish_capture(&lab, c));
    if let Some(w) = &rep.wire {
        say(&format!(
            "wire check on {}: {} bytes captured, TLS records: {}, plaintext seen: {}",
            w.interface, w.bytes, w.tls_records, w.plaintext_seen
        ));
    }

    let direct = lab.run_in(
        load,
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "http://198.18.0.11:8080/direct",
        ],
    )?;
    say(&format!(
        "load-1 → web-1's pod address 198.18.0.11:8080 directly: {:?}",
        direct.trim()
    ));
    rep.direct = Some(direct.trim().to_string());

    let started = Instant::now();
    let banner = lab.run_in(
        load,
        &weft_args(&lab, &["lab-app", "probe", "--addr", DB_VIP]),
    )?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    say(&format!(
        "db (server speaks first) through the mesh: {:?} in {ms:.0} ms",
        banner.trim()
    ));
    rep.banner = Some(BannerReport {
        text: banner.trim().to_string(),
        ms,
    });

    check_interrupted()?;
    rep.job = Some(run_job(&mut lab)?);
    if let Some(j) = &rep.job {
        say(&format!(
            "job-1: weft-await --shutdown ran the command (exit {:?}); the proxy exited with {:?} after {:?} ms",
            j.exit_code, j.proxy_exit_code, j.proxy_exited_ms
        ));
    }

    for (name, _, _, _) in PODS {
        let Some(i) = lab.pod(name) else { continue };
        let Ok(text) = lab.metrics(i) else { continue };
        let samples = report::parse(&text);
        let mut g = BTreeMap::new();
        g.insert(
            "inbound".to_string(),
            Golden::from_samples(&samples, "inbound"),
        );
        g.insert(
            "outbound".to_string(),
            Golden::from_samples(&samples, "outbound"),
        );
        rep.golden.insert(name.to_string(), g);
        if *name == "load-1" {
            let mut ids: Vec<String> = samples
                .iter()
                .filter(|s| s.labels.get("direction").map(String::as_str) == Some("outbound"))
                .filter_map(|s| s.labels.get("server_id").cloned())
                .collect();
            ids.sort();
            ids.dedup();
            rep.server_ids = ids;
        }
        for (client, (requests, tcp)) in report::inbound_edges(&samples) {
            rep.edges.push(Edge {
                client,
                server: name.to_string(),
                requests,
                tcp,
            });
        }
    }
    print_tables(&rep, opts.duration);
    if let Some(path) = &opts.report {
        let json = serde_json::to_string_pretty(&rep).unwrap_or_default();
        std::fs::write(path, json).map_err(|source| LabError::Write {
            path: path.clone(),
            source,
        })?;
    }
    say("tearing down: every namespace, veth and process goes");
    drop(lab);
    Ok(rep)
}

fn say(s: &str) {
    println!("weft demo: {s}");
}

fn missing(pod: &str) -> LabError {
    LabError::Step {
        what: "layout".into(),
        detail: format!("pod {pod} missing"),
    }
}

fn weft_args<'a>(lab: &'a Lab, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = vec![lab.bins.weft.to_str().unwrap_or("weft")];
    v.extend_from_slice(rest);
    v
}

fn wait_listening(lab: &Lab, pod: &str, port: u16) -> Result<(), LabError> {
    let i = lab.pod(pod).ok_or_else(|| missing(pod))?;
    let started = Instant::now();
    loop {
        let out = lab
            .run_in(i, &["ss", "-Hltn", &format!("sport = :{port}")])
            .unwrap_or_default();
        if !out.trim().is_empty() {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err(LabError::NotReady(
                format!("{pod} listening on {port}"),
                Duration::from_secs(20),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Capture {
    child: std::process::Child,
    file: PathBuf,
    interface: String,
}

fn start_capture(lab: &Lab, pod: usize) -> Option<Capture> {
    if super::netns::missing_tools(&["tcpdump"]).len() == 1 {
        say("tcpdump not installed: skipping the wire check (apt-get install tcpdump)");
        return None;
    }
    let interface = lab.pods[pod].veth.clone();
    let file = lab.dir.join("web-1.pcap");
    let child = lab
        .node
        .command("tcpdump")
        .args(["-i", &interface, "-U", "-s", "0", "-w"])
        .arg(&file)
        .arg("tcp")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(500));
    Some(Capture {
        child,
        file,
        interface,
    })
}

fn finish_capture(_lab: &Lab, mut c: Capture) -> Option<WireReport> {
    std::thread::sleep(Duration::from_millis(300));
    // SIGINT lets tcpdump flush the file.
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(c.child.id() as libc::pid_t, libc::SIGINT);
    }
    let _ = c.child.wait();
    let bytes = std::fs::read(&c.file).ok()?;
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    Some(WireReport {
        interface: c.interface,
        bytes: bytes.len(),
        tls_records: has(&[0x17, 0x03, 0x03]) || has(&[0x16, 0x03, 0x01]),
        plaintext_seen: has(b"GET /orders") || has(b"path=/orders") || has(b"web-1 path"),
    })
}

fn run_job(lab: &mut Lab) -> Result<JobReport, LabError> {
    let i = lab.pod("job-1").ok_or_else(|| missing("job-1"))?;
    let argv_await = lab.bins.argv(&lab.bins.await_);
    let mut argv: Vec<String> = argv_await;
    argv.extend(["--shutdown", "--", "sh", "-c"].map(String::from));
    argv.push(format!(
        "curl -sf http://{WEB_VIP}/job >/dev/null && exit 3"
    ));
    let status = lab.pods[i]
        .ns
        .command(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|source| LabError::Spawn {
            what: "weft-await in job-1".into(),
            source,
        })?;
    let started = Instant::now();
    let mut proxy_exit = None;
    let mut exited_ms = None;
    if let Some(proxy) = lab.pods[i].proxy.as_mut() {
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(s)) = proxy.try_wait() {
                proxy_exit = s.code();
                exited_ms = Some(started.elapsed().as_millis() as u64);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(JobReport {
        exit_code: status.code(),
        proxy_exit_code: proxy_exit,
        proxy_exited_ms: exited_ms,
    })
}

fn print_tables(rep: &DemoReport, duration: Duration) {
    let secs = duration.as_secs_f64().max(1.0);
    println!();
    println!(
        "{:<8} {:<9} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8} {:>5}",
        "POD", "DIRECTION", "REQUESTS", "SUCCESS", "RPS", "P50 ms", "P95 ms", "P99 ms", "TCP"
    );
    for (pod, dirs) in &rep.golden {
        for (dir, g) in dirs {
            if g.requests == 0 && g.tcp_connections == 0 {
                continue;
            }
            println!(
                "{:<8} {:<9} {:>8} {:>7.1}% {:>7.1} {:>8.2} {:>8.2} {:>8.2} {:>5}",
                pod,
                dir,
                g.requests,
                g.success_rate * 100.0,
                g.requests as f64 / secs,
                g.p50_ms,
                g.p95_ms,
                g.p99_ms,
                g.tcp_connections
            );
        }
    }
    println!();
    println!(
        "{:<55} {:<8} {:>8} {:>5}",
        "CLIENT IDENTITY (mTLS verified)", "SERVER", "REQUESTS", "TCP"
    );
    for e in &rep.edges {
        println!(
            "{:<55} {:<8} {:>8} {:>5}",
            e.client, e.server, e.requests, e.tcp
        );
    }
    println!();
}

/// Whether `weft demo` can run the namespace mesh here, and if not, why.
pub fn preflight() -> Result<(), String> {
    if !super::netns::is_root() {
        return Err("it needs root for network namespaces and iptables: run `sudo scripts/demo` (or `weft demo --loopback` for the no-root version)".into());
    }
    let missing = super::netns::missing_tools(&["ip", "iptables", "setpriv", "curl", "ss"]);
    if !missing.is_empty() {
        return Err(format!(
            "missing tools: {} (Debian: apt-get install iproute2 iptables util-linux curl)",
            missing.join(", ")
        ));
    }
    let _ = Command::new("true");
    Ok(())
}
