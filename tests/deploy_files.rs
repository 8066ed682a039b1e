//! No Docker engine or cluster runs here, so the deployment files are
//! checked against the binary they deploy: every flag and `LEADSTREAM_*`
//! variable that deploy/compose.yaml and deploy/k8s/ pass to a leadstream
//! container must exist in that subcommand's `--help`, every role must
//! listen on 0.0.0.0 at the port its container, probes, Service and
//! Prometheus scrape use, and every referenced file must exist.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
};

use serde_yaml::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// What a subcommand's `--help` accepts.
struct Help {
    flags: BTreeSet<String>,
    envs: BTreeSet<String>,
    /// Variables every subcommand reads (listed in the top-level help).
    global_envs: BTreeSet<String>,
    global_prefixes: Vec<String>,
}

fn help(subcommand: &[String]) -> Help {
    let run = |args: &[String]| {
        let out = Command::new(env!("CARGO_BIN_EXE_leadstream"))
            .args(args)
            .arg("--help")
            .output()
            .expect("run leadstream --help");
        assert!(out.status.success(), "leadstream {args:?} --help failed");
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(subcommand);
    let top = run(&[]);
    let words = |t: &str, start: &str| -> BTreeSet<String> {
        t.split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == ',' || c == '=')
            .filter(|w| w.starts_with(start))
            .map(|w| w.trim_end_matches(['.', ':', ')']).to_owned())
            .collect()
    };
    let global = words(&top, "LEADSTREAM_");
    Help {
        flags: words(&text, "--"),
        envs: words(&text, "LEADSTREAM_"),
        global_prefixes: global
            .iter()
            .filter_map(|e| e.strip_suffix('*').map(str::to_owned))
            .collect(),
        global_envs: global,
    }
}

impl Help {
    fn has_env(&self, name: &str) -> bool {
        self.envs.contains(name)
            || self.global_envs.contains(name)
            || self.global_prefixes.iter().any(|p| name.starts_with(p))
    }
}

/// One leadstream container as deployed: its arguments and environment.
#[derive(Debug)]
struct Role {
    place: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    /// Ports the platform sends traffic to (container side).
    ports: BTreeSet<u16>,
    /// Ports probes and scrapers use.
    probed: BTreeSet<u16>,
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// Checks a role against its subcommand's help; returns (subcommand, port).
/// Commands that run to completion: no listener, no probes.
const RUN_TO_COMPLETION: [&str; 2] = ["sink migrate", "scorer compact-identity"];

fn check(role: &Role) -> (String, Option<u16>) {
    let sub: Vec<String> = role
        .args
        .iter()
        .take_while(|a| !a.starts_with('-'))
        .cloned()
        .collect();
    assert!(
        !sub.is_empty(),
        "{}: no subcommand in {:?}",
        role.place,
        role.args
    );
    let h = help(&sub);
    for flag in role.args.iter().filter(|a| a.starts_with("--")) {
        let name = flag.split('=').next().unwrap();
        assert!(
            h.flags.contains(name),
            "{}: `leadstream {}` has no flag {name}",
            role.place,
            sub.join(" ")
        );
    }
    for name in role.env.keys().filter(|k| k.starts_with("LEADSTREAM_")) {
        assert!(
            h.has_env(name),
            "{}: `leadstream {}` reads no variable {name}",
            role.place,
            sub.join(" ")
        );
    }
    // Where it listens: --listen, else the role's LEADSTREAM_*_LISTEN.
    let listen = role
        .args
        .iter()
        .position(|a| a == "--listen")
        .map(|i| role.args[i + 1].clone())
        .or_else(|| {
            role.env
                .iter()
                .find(|(k, _)| k.ends_with("_LISTEN") && h.envs.contains(*k))
                .map(|(_, v)| v.clone())
        });
    // A run-to-completion command takes the role's flags but serves nothing.
    let serves =
        h.flags.contains("--listen") && !RUN_TO_COMPLETION.contains(&sub.join(" ").as_str());
    let port = match (serves, listen) {
        (false, _) => None,
        (true, None) => panic!(
            "{}: `leadstream {}` keeps its default 127.0.0.1 listen address, unreachable in a container",
            role.place,
            sub.join(" ")
        ),
        (true, Some(addr)) => {
            let (host, port) = addr.rsplit_once(':').expect("host:port");
            assert_eq!(host, "0.0.0.0", "{}: listen on all interfaces", role.place);
            Some(port.parse::<u16>().unwrap())
        }
    };
    if let Some(p) = port {
        for other in role.ports.iter().chain(&role.probed) {
            assert_eq!(
                *other, p,
                "{}: listens on {p} but a port, probe or scrape uses {other}",
                role.place
            );
        }
        assert!(
            !role.ports.is_empty(),
            "{}: port {p} not exposed",
            role.place
        );
    }
    (sub.join(" "), port)
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let mut v = Value::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
            v.apply_merge().unwrap();
            v
        })
        .collect()
}

use serde::Deserialize as _;

#[test]
fn compose_passes_only_flags_variables_and_ports_the_cli_has() {
    let compose = &yaml_docs(&Path::new(ROOT).join("deploy/compose.yaml"))[0];
    let services = compose["services"].as_mapping().unwrap();
    let scrape =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/prometheus/prometheus.yml")).unwrap();
    let mut roles = BTreeMap::new();
    for (name, svc) in services {
        let name = str_of(name);
        if !str_of(&svc["image"]).starts_with("leadstream") {
            continue;
        }
        assert_eq!(
            str_of(&svc["build"]["dockerfile"]),
            "deploy/Dockerfile",
            "{name}"
        );
        let args: Vec<String> = svc["command"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name}: command as a list"))
            .iter()
            .map(str_of)
            .collect();
        let env = svc["environment"]
            .as_mapping()
            .map(|m| m.iter().map(|(k, v)| (str_of(k), str_of(v))).collect())
            .unwrap_or_default();
        let ports = svc["ports"]
            .as_sequence()
            .map(|ps| {
                ps.iter()
                    .map(|p| str_of(p).rsplit(':').next().unwrap().parse().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        // Prometheus targets `service:port`.
        let probed = scrape
            .split(['"', '\''])
            .filter_map(|t| t.strip_prefix(&format!("{name}:")))
            .map(|p| p.parse().unwrap())
            .collect();
        let role = Role {
            place: format!("compose service {name}"),
            args,
            env,
            ports,
            probed,
        };
        roles.insert(name, check(&role));
    }
    let subs: BTreeSet<&str> = roles.values().map(|(s, _)| s.as_str()).collect();
    for needed in ["ingest", "scorer", "sink", "sink migrate", "registry"] {
        assert!(
            subs.contains(needed),
            "compose runs no `{needed}`: {subs:?}"
        );
    }
    // Every role that serves metrics is scraped.
    for (name, (_, port)) in &roles {
        if let (Some(p), true) = (port, name != "registry") {
            assert!(
                scrape.contains(&format!("{name}:{p}")),
                "prometheus.yml does not scrape {name}:{p}"
            );
        }
    }
    // Mounted host files exist.
    for (name, svc) in services {
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let v = str_of(v);
            if let Some(local) = v.strip_prefix("./") {
                let local = local.split(':').next().unwrap();
                assert!(
                    Path::new(ROOT).join("deploy").join(local).exists(),
                    "{}: mounts missing deploy/{local}",
                    str_of(name)
                );
            }
        }
    }
}

#[test]
fn kubernetes_manifests_pass_only_flags_variables_and_ports_the_cli_has() {
    let dir = Path::new(ROOT).join("deploy/k8s");
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            docs.extend(yaml_docs(&path));
        }
    }
    let mut served: BTreeMap<String, u16> = BTreeMap::new();
    let mut subs = BTreeSet::new();
    for doc in &docs {
        let kind = str_of(&doc["kind"]);
        let pod = match kind.as_str() {
            "Deployment" | "Job" | "StatefulSet" => &doc["spec"]["template"],
            "CronJob" => &doc["spec"]["jobTemplate"]["spec"]["template"],
            _ => continue,
        };
        let name = str_of(&doc["metadata"]["name"]);
        let annotated: Option<u16> = pod["metadata"]["annotations"]["prometheus.io/port"]
            .as_str()
            .map(|p| p.parse().unwrap());
        for c in pod["spec"]["containers"].as_sequence().unwrap() {
            let mut probed: BTreeSet<u16> = annotated.into_iter().collect();
            for probe in ["readinessProbe", "livenessProbe"] {
                let get = &c[probe]["httpGet"];
                if get.is_mapping() {
                    let path = str_of(&get["path"]);
                    assert!(
                        ["/_liveness", "/_readiness"].contains(&path.as_str()),
                        "{name}: {probe} on {path}"
                    );
                    probed.insert(get["port"].as_u64().unwrap() as u16);
                }
            }
            let role = Role {
                place: format!("k8s {kind} {name}"),
                args: c["args"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(str_of)
                    .collect(),
                env: c["env"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        let v = e["value"].as_str().unwrap_or("(from a reference)");
                        (str_of(&e["name"]), v.to_owned())
                    })
                    .collect(),
                ports: c["ports"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .map(|p| p["containerPort"].as_u64().unwrap() as u16)
                    .collect(),
                probed,
            };
            let (sub, port) = check(&role);
            if !RUN_TO_COMPLETION.contains(&sub.as_str()) {
                assert!(
                    c["readinessProbe"].is_mapping() && c["livenessProbe"].is_mapping(),
                    "{name}: probes on /_liveness and /_readiness"
                );
            }
            if let Some(p) = port {
                served.insert(name.clone(), p);
            }
            subs.insert(sub);
        }
    }
    for needed in [
        "ingest",
        "scorer",
        "scorer compact-identity",
        "sink",
        "sink migrate",
    ] {
        assert!(subs.contains(needed), "k8s runs no `{needed}`: {subs:?}");
    }
    // Each Service sends traffic to the port its Deployment listens on.
    for doc in docs.iter().filter(|d| str_of(&d["kind"]) == "Service") {
        let name = str_of(&doc["metadata"]["name"]);
        let port = served
            .get(&name)
            .unwrap_or_else(|| panic!("Service {name} has no Deployment of that name"));
        for p in doc["spec"]["ports"].as_sequence().unwrap() {
            assert_eq!(
                p["targetPort"].as_u64().unwrap() as u16,
                *port,
                "Service {name}"
            );
        }
    }
}

#[test]
fn the_dockerfile_builds_the_binary_and_ships_the_default_config() {
    let docker = std::fs::read_to_string(Path::new(ROOT).join("deploy/Dockerfile")).unwrap();
    assert!(docker.contains("cargo build --release --locked --bin leadstream"));
    assert!(docker.contains("ENTRYPOINT [\"leadstream\"]"));
    for copied in docker
        .lines()
        .filter_map(|l| l.strip_prefix("COPY deploy/"))
        .map(|l| l.split_whitespace().next().unwrap())
    {
        assert!(
            Path::new(ROOT).join("deploy").join(copied).exists(),
            "Dockerfile copies missing deploy/{copied}"
        );
    }
    // The compose file and manifests mount the config files by these names.
    for f in ["sources.toml", "scoring.toml"] {
        assert!(Path::new(ROOT).join("deploy/config").join(f).exists());
    }
}

/// Command 1 of the README (`cargo run --release -- quickstart`) must build
/// on a fresh machine with nothing installed by hand: librdkafka's CMake
/// build (rdkafka's `cmake-build` feature) needs cmake and the curl headers,
/// which such a machine lacks; its configure script needs neither.
#[test]
fn the_build_needs_no_cmake_or_curl() {
    let lock = std::fs::read_to_string(Path::new(ROOT).join("Cargo.lock")).unwrap();
    // aws-lc-sys lists the `cmake` crate too but builds with cc on Linux;
    // what needs the cmake program is librdkafka's CMake build.
    let rdkafka_sys = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"rdkafka-sys\""))
        .expect("rdkafka-sys in Cargo.lock");
    assert!(
        !rdkafka_sys.contains("\"cmake\""),
        "rdkafka-sys is built with CMake (rdkafka's `cmake-build` feature): a fresh machine has no cmake\n{rdkafka_sys}"
    );
    assert!(
        !lock.contains("name = \"curl-sys\""),
        "Cargo.lock pulls in curl-sys: a fresh machine has no curl headers"
    );
    let deps = std::fs::read_to_string(Path::new(ROOT).join("deploy/scripts/install-test-deps.sh"))
        .unwrap();
    for pkg in ["cmake", "libcurl"] {
        assert!(
            !deps.contains(&format!("need_apt+=({pkg}")),
            "install-test-deps.sh installs {pkg}: the build must not need it"
        );
    }
    let test = std::fs::read_to_string(Path::new(ROOT).join("deploy/test.sh")).unwrap();
    let build = test.find("\ncargo build").expect("deploy/test.sh builds");
    let install = test
        .find("\nbash deploy/scripts/install-test-deps.sh")
        .expect("deploy/test.sh installs test services");
    assert!(
        build < install,
        "deploy/test.sh must build before it installs anything, so CI proves a fresh build"
    );
}

/// The ingest README lists every reason code the code can answer with.
#[test]
fn the_ingest_readme_lists_every_reason_code() {
    let readme = include_str!("../ingest/README.md");
    let reasons = leadstream_ingest::server::REQUEST_REASONS
        .iter()
        .chain(leadstream_ingest::pipeline::REASONS.iter());
    for reason in reasons {
        assert!(
            readme.contains(&format!("`{reason}`")),
            "ingest/README.md does not list the reason code {reason}"
        );
    }
}
