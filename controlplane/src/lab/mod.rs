//! A real mesh on one machine: the controller in a "node" network namespace, each pod in
//! its own namespace joined to the node's bridge by a veth pair, `weft-init` writing real
//! iptables rules in every pod, `weft-proxy` running as uid 2102 next to unmodified apps.
//! `weft demo` drives one; the end-to-end tests build the same thing and look inside.
//!
//! Addresses are 198.18.0.0/15 (the benchmarking range) and exist only inside the
//! namespaces created here; [`Lab`] deletes the namespaces (and with them every veth) and
//! kills every process it started when it is dropped, also when a run fails.

pub mod apps;
pub mod demo;
pub mod netns;
pub mod report;

use netns::{Netns, NetnsError};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The node's bridge address, where the controller listens.
pub const NODE_IP: &str = "198.18.0.1";
pub const CONTROLLER_PORT: u16 = 8086;
pub const BRIDGE: &str = "weftbr0";
pub const PROXY_UID: u32 = 2102;
pub const CONTROLLER_IDENTITY: &str =
    "weft-controller.weft.serviceaccount.identity.weft.cluster.local";

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab needs root (network namespaces and iptables): run it with sudo")]
    NotRoot,
    #[error("missing tools: {0} (Debian: apt-get install iproute2 iptables)")]
    MissingTools(String),
    #[error("missing binary {0} (build the workspace first: cargo build --workspace)")]
    MissingBinary(PathBuf),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} failed: {detail}")]
    Step { what: String, detail: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} did not become ready within {1:?}")]
    NotReady(String, Duration),
    #[error("interrupted")]
    Interrupted,
}

/// Where the lab's binaries are and how to run them.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub weft: PathBuf,
    pub proxy: PathBuf,
    pub init: PathBuf,
    pub await_: PathBuf,
    /// A prefix such as `qemu-aarch64-static` to run foreign-architecture builds.
    pub runner: Option<String>,
}

impl Binaries {
    /// The binaries next to the running `weft` (as `cargo build` lays them out).
    pub fn beside_current_exe(runner: Option<String>) -> Result<Binaries, LabError> {
        let weft = std::env::current_exe().map_err(|source| LabError::Spawn {
            what: "locating weft".into(),
            source,
        })?;
        let dir = weft.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::in_dir(&dir, weft, runner)
    }

    /// The data-plane binaries from `dir` (e.g. `target/aarch64-unknown-linux-musl/debug`),
    /// `weft` (controller, apps) from `weft`.
    pub fn in_dir(dir: &Path, weft: PathBuf, runner: Option<String>) -> Result<Binaries, LabError> {
        let b = Binaries {
            weft,
            proxy: dir.join("weft-proxy"),
            init: dir.join("weft-init"),
            await_: dir.join("weft-await"),
            runner,
        };
        for p in [&b.weft, &b.proxy, &b.init, &b.await_] {
            if !p.exists() {
                return Err(LabError::MissingBinary(p.clone()));
            }
        }
        Ok(b)
    }

    /// argv for running `bin` (through the runner if any; `weft` itself always runs natively).
    pub fn argv(&self, bin: &Path) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(r) = self.runner.as_ref().filter(|_| bin != self.weft) {
            v.push(r.clone());
        }
        v.push(bin.display().to_string());
        v
    }
}

/// A pod: a namespace, an address, a service account, and what runs in it.
#[derive(Debug)]
pub struct Pod {
    pub name: String,
    pub ip: String,
    pub service_account: String,
    pub ns: Netns,
    /// The host side of its veth, in the node namespace (for captures).
    pub veth: String,
    pub proxy: Option<Child>,
    pub apps: Vec<Child>,
}

impl Pod {
    pub fn identity(&self) -> String {
        format!(
            "{}.apps.serviceaccount.identity.weft.cluster.local",
            self.service_account
        )
    }
}

/// A running lab. Dropping it tears everything down.
#[derive(Debug)]
pub struct Lab {
    pub tag: String,
    pub dir: PathBuf,
    pub bins: Binaries,
    /// The native build, when `bins` are foreign (see [`Lab::add_pod`]).
    pub native: Option<Binaries>,
    pub node: Netns,
    pub controller: Option<Child>,
    pub pods: Vec<Pod>,
}

impl Lab {
    /// Checks prerequisites, creates the node namespace with its bridge, generates the
    /// identity files and starts the controller with `config_yaml`.
    pub fn start(
        tag: &str,
        bins: Binaries,
        dir: PathBuf,
        config_yaml: &str,
    ) -> Result<Lab, LabError> {
        if !netns::is_root() {
            return Err(LabError::NotRoot);
        }
        let missing = netns::missing_tools(&["ip", "iptables", "iptables-restore", "setpriv"]);
        if !missing.is_empty() {
            return Err(LabError::MissingTools(missing.join(", ")));
        }
        std::fs::create_dir_all(&dir).map_err(|source| LabError::Write {
            path: dir.clone(),
            source,
        })?;
        let node = Netns::create(&format!("{tag}-node"))?;
        netns::bridge(&node, BRIDGE, NODE_IP, 16)?;
        let mut lab = Lab {
            tag: tag.to_string(),
            dir,
            native: None,
            bins,
            node,
            controller: None,
            pods: Vec::new(),
        };
        lab.generate_identity()?;
        let config = lab.dir.join("weft-config.yaml");
        write(&config, config_yaml)?;
        lab.start_controller(&config)?;
        Ok(lab)
    }

    fn generate_identity(&self) -> Result<(), LabError> {
        let out = self.dir.join("identity");
        let mut argv = self.bins.argv(&self.bins.weft);
        argv.extend(["identity", "generate", "--force", "--out"].map(String::from));
        argv.push(out.display().to_string());
        let status = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|source| LabError::Spawn {
                what: "weft identity generate".into(),
                source,
            })?;
        if !status.success() {
            return Err(LabError::Step {
                what: "weft identity generate".into(),
                detail: status.to_string(),
            });
        }
        // The proxies (uid 2102) read the trust anchors.
        chmod(&self.dir, 0o755)?;
        chmod(&out, 0o755)?;
        chmod(&out.join("ca.crt"), 0o644)?;
        Ok(())
    }

    fn start_controller(&mut self, config: &Path) -> Result<(), LabError> {
        let mut argv = self.bins.argv(&self.bins.weft);
        argv.extend([
            "controller".to_string(),
            "--identity-dir".into(),
            self.dir.join("identity").display().to_string(),
            "--config".into(),
            config.display().to_string(),
            "--proxy-api-addr".into(),
            format!("{NODE_IP}:{CONTROLLER_PORT}"),
        ]);
        let log = log_file(&self.dir, "controller")?;
        let child = self
            .node
            .command(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| LabError::Spawn {
                what: "weft controller".into(),
                source,
            })?;
        self.controller = Some(child);
        wait_for(
            &format!("controller on {NODE_IP}:{CONTROLLER_PORT}"),
            Duration::from_secs(20),
            || {
                self.node
                    .run(&[
                        "sh",
                        "-c",
                        &format!("ss -Hltn 'sport = :{CONTROLLER_PORT}' | grep -q ."),
                    ])
                    .is_ok()
            },
        )
    }

    /// Adds a pod: namespace, veth, address, `weft-init` rules, and (if `meshed`) a proxy
    /// running as uid 2102 with a token for `service_account`, waiting until it is ready.
    /// `native_proxy` runs this pod's proxy from the native build even when the lab runs
    /// foreign-architecture binaries: qemu-user cannot emulate `SO_ORIGINAL_DST`, which a
    /// proxy needs for redirected (client-side) connections.
    pub fn add_pod(
        &mut self,
        name: &str,
        ip: &str,
        service_account: &str,
        meshed: bool,
        native_proxy: bool,
        extra_env: &[(&str, &str)],
    ) -> Result<usize, LabError> {
        let ip = ip.to_string();
        let ns = Netns::create(&format!("{}-{name}", self.tag))?;
        let veth = format!(
            "v{}{}",
            self.tag.chars().take(4).collect::<String>(),
            self.pods.len()
        );
        netns::attach(&self.node, BRIDGE, &ns, &veth, &ip, 16, NODE_IP)?;
        let mut pod = Pod {
            name: name.to_string(),
            ip,
            service_account: service_account.to_string(),
            ns,
            veth,
            proxy: None,
            apps: Vec::new(),
        };
        if meshed {
            let argv = self.bins.argv(&self.bins.init);
            let all: Vec<&str> = argv.iter().map(String::as_str).collect();
            if let Err(e) = pod.ns.run(&all) {
                return Err(LabError::Step {
                    what: format!("weft-init in {name}"),
                    detail: e.to_string(),
                });
            }
            let token = self.dir.join(format!("{name}.token"));
            write(&token, &token_for(&self.tag, service_account))?;
            chmod(&token, 0o644)?;
            let mut argv = vec![
                "setpriv".to_string(),
                "--reuid".into(),
                PROXY_UID.to_string(),
                "--regid".into(),
                PROXY_UID.to_string(),
                "--clear-groups".into(),
            ];
            match (&self.native, native_proxy) {
                (Some(native), true) => argv.push(native.proxy.display().to_string()),
                _ => argv.extend(self.bins.argv(&self.bins.proxy)),
            }
            let log = log_file(&self.dir, &format!("proxy-{name}"))?;
            let mut cmd = pod.ns.command(&argv[0]);
            cmd.args(&argv[1..])
                .env("WEFT_PROXY_IDENTITY_NAME", pod.identity())
                .env(
                    "WEFT_PROXY_IDENTITY_TRUST_ANCHORS",
                    self.dir.join("identity/ca.crt"),
                )
                .env("WEFT_PROXY_IDENTITY_TOKEN_FILE", &token)
                .env(
                    "WEFT_PROXY_IDENTITY_CONTROLLER_ADDR",
                    format!("{NODE_IP}:{CONTROLLER_PORT}"),
                )
                .env("WEFT_PROXY_IDENTITY_CONTROLLER_NAME", CONTROLLER_IDENTITY)
                .env("WEFT_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "true")
                .env("WEFT_PROXY_SHUTDOWN_GRACE_PERIOD", "5s")
                .stdout(Stdio::null())
                .stderr(log);
            for (k, v) in extra_env {
                cmd.env(k, v);
            }
            pod.proxy = Some(cmd.spawn().map_err(|source| LabError::Spawn {
                what: format!("weft-proxy in {name}"),
                source,
            })?);
            let admin = format!("{}:4191", pod.ip);
            wait_for(&format!("proxy in {name}"), Duration::from_secs(30), || {
                http_get(&self.node, &format!("http://{admin}/ready")).is_ok_and(|b| b == "ready\n")
            })?;
        }
        self.pods.push(pod);
        Ok(self.pods.len() - 1)
    }

    /// Starts `weft lab-app ARGS…` inside a pod (as root: an ordinary, captured app).
    pub fn start_app(&mut self, pod: usize, args: &[&str]) -> Result<(), LabError> {
        let mut argv = self.bins.argv(&self.bins.weft);
        argv.push("lab-app".into());
        argv.extend(args.iter().map(|s| s.to_string()));
        let log = log_file(
            &self.dir,
            &format!("app-{}-{}", self.pods[pod].name, self.pods[pod].apps.len()),
        )?;
        let child = self.pods[pod]
            .ns
            .command(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| LabError::Spawn {
                what: format!("app in {}", self.pods[pod].name),
                source,
            })?;
        self.pods[pod].apps.push(child);
        Ok(())
    }

    /// Runs a command to completion inside a pod, returning its stdout.
    pub fn run_in(&self, pod: usize, args: &[&str]) -> Result<String, LabError> {
        let out = self.pods[pod].ns.run(args)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The `/metrics` page of a pod's proxy.
    pub fn metrics(&self, pod: usize) -> Result<String, LabError> {
        http_get(
            &self.node,
            &format!("http://{}:4191/metrics", self.pods[pod].ip),
        )
    }

    pub fn pod(&self, name: &str) -> Option<usize> {
        self.pods.iter().position(|p| p.name == name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for pod in &mut self.pods {
            for c in pod.apps.iter_mut().chain(pod.proxy.iter_mut()) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if let Some(c) = self.controller.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deleting the namespaces (Netns::drop) removes every veth and the bridge.
        self.pods.clear();
    }
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into a flag, so a lab is always torn down (its children get
/// the terminal's SIGINT themselves and end; the lab notices and cleans up).
pub fn catch_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Fails with [`LabError::Interrupted`] once a signal arrived.
pub fn check_interrupted() -> Result<(), LabError> {
    if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        Err(LabError::Interrupted)
    } else {
        Ok(())
    }
}

/// The token the lab's config registers for a service account.
pub fn token_for(tag: &str, service_account: &str) -> String {
    format!("{tag}-{service_account}-token")
}

fn write(path: &Path, text: &str) -> Result<(), LabError> {
    std::fs::write(path, text).map_err(|source| LabError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn chmod(path: &Path, mode: u32) -> Result<(), LabError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        LabError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

fn log_file(dir: &Path, name: &str) -> Result<std::fs::File, LabError> {
    let path = dir.join(format!("{name}.log"));
    std::fs::File::create(&path).map_err(|source| LabError::Write { path, source })
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Result<(), LabError> {
    let started = Instant::now();
    while !ok() {
        check_interrupted()?;
        if started.elapsed() > limit {
            return Err(LabError::NotReady(what.to_string(), limit));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A plain HTTP GET from inside `ns` (curl), returning the body.
pub fn http_get(ns: &Netns, url: &str) -> Result<String, LabError> {
    let out = ns.run(&["curl", "-sS", "--max-time", "5", url])?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
