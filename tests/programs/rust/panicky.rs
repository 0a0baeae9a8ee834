// panicky dies the way its first argument says: a panic (unwinding out of
// main, or aborting when built with -C panic=abort), or a stack overflow
// that the standard library's guard-page handler turns into an abort.
use std::hint::black_box;

#[inline(never)]
fn load_config(path: &str) -> String {
    panic!("config missing: {path}"); // CRASH-LINE
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn descend(depth: u64) -> u64 {
    let pad = black_box([depth; 64]);
    descend(depth + 1) + pad[3]
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    // An optional delay first, for tests that must see the process start.
    if let Some(ms) = std::env::args().nth(2).and_then(|a| a.parse().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    match mode.as_str() {
        "panic" => println!("{}", load_config("/etc/panicky.toml")),
        "overflow" => println!("{}", descend(black_box(0))),
        "caught" => {
            let caught = std::panic::catch_unwind(|| load_config("/nowhere")).is_err();
            println!("caught {caught}");
        }
        _ => std::process::exit(64),
    }
}
