//! The README's run command, as written: it starts the gateway on the embedded store (no
//! database) and prints a token and `curl` lines; the `curl` lines work.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

/// The command on the README's first screen whose comment starts with `run:`.
fn readme_run_command(root: &Path) -> String {
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let first_screen: String = readme.lines().take(20).collect::<Vec<_>>().join("\n");
    first_screen
        .lines()
        .find_map(|line| {
            let (command, comment) = line.split_once('#')?;
            comment
                .trim()
                .starts_with("run:")
                .then(|| command.trim().to_owned())
        })
        .expect("the README's first screen has a `# run:` command")
}

#[tokio::test]
async fn the_readme_run_command_serves_and_its_curl_lines_work() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let command = readme_run_command(&root);
    assert_eq!(command, "./scripts/demo.sh");
    let dir = std::env::temp_dir().join(format!("alga-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // As written, with two settings from the environment: a free port instead of 8080 (which
    // may be taken on a CI machine) and a store file outside the checkout.
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", &format!("exec {command}")])
        .current_dir(&root)
        .env("ALGA_STORAGE_LISTEN", "127.0.0.1:0")
        .env("ALGA_STORAGE_STORE", dir.join("demo.db"))
        .env_remove("ALGA_STORAGE_DATABASE_URL")
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("the run command starts");
    // `cargo run` starts the server as its own child: stop the whole process group, also when
    // an assertion fails.
    let _group = ProcessGroup(child.id().expect("running"));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let curls = tokio::time::timeout(Duration::from_secs(600), async {
        let mut curls = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push(line.clone());
            if line.starts_with("curl ") {
                curls.push(line);
                if curls.len() == 2 {
                    break;
                }
            }
        }
        curls
    })
    .await
    .expect("the run command prints its curl lines");
    assert_eq!(curls.len(), 2, "printed: {printed:#?}");
    assert!(
        printed[0].contains("embedded store"),
        "serves the embedded default: {printed:#?}"
    );

    let run = |line: String| async move {
        let output = tokio::process::Command::new("sh")
            .args(["-c", &line])
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{line}: {output:?}");
        serde_json::from_slice::<serde_json::Value>(&output.stdout)
            .unwrap_or_else(|e| panic!("{line}: not JSON ({e}): {output:?}"))
    };
    let written = run(curls[0].clone()).await;
    assert_eq!(written["key"], "greeting");
    assert!(written["revision"].as_u64().unwrap() >= 1);
    let read = run(curls[1].clone()).await;
    assert_eq!(read["value"], serde_json::json!({"hello": "world"}));
    assert_eq!(read["revision"], written["revision"]);

    drop(_group);
    child.wait().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Terminates a process group when dropped.
struct ProcessGroup(u32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.0)])
            .status();
    }
}
