//! `loadgen`: fake xpra sessions and clients (see issue: loadgen and perf/).

fn main() {
    eprintln!("loadgen: not built yet; see docs/ for what exists today");
    std::process::exit(2);
}
