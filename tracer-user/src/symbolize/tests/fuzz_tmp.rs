use super::{TempDir, compile, symbol_address};
use crate::symbolize::{ModuleRef, Symbolizer};

#[test]
fn fuzz_tmp() {
    let dir = TempDir::new("fuzz");
    let src = "#include <stdio.h>\nstatic inline __attribute__((always_inline)) int h(int x){return x*3;}\nint target(int x) { return h(x) + 1; }\nint p1(int x){return x+1;} int p2(int x){return x+2;} int p3(int x){return x*3;} int p4(int x){return x-4;}\nint main(void) { printf(\"%d\", target(0)); return 0; }\n";
    let rounds: usize = std::env::var("FUZZ_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
    for (variant, flags) in [("plain", vec!["-g", "-O2"]), ("zlib", vec!["-g", "-O2", "-gz=zlib"]), ("zstd", vec!["-g", "-O2", "-Wl,--compress-debug-sections=zstd"])] {
        let exe = compile(&dir, "cc", "f.c", src, &flags, variant);
        let good = std::fs::read(&exe).unwrap();
        let ranges: Vec<(usize, usize)> = {
            use object::{Object, ObjectSection};
            let f = object::File::parse(&*good).unwrap();
            f.sections().filter(|s| s.name().is_ok_and(|n| n.starts_with(".debug"))).filter_map(|s| s.file_range()).map(|(o, l)| (o as usize, l as usize)).filter(|r| r.1 > 0).collect()
        };
        let t = symbol_address(&exe, "target");
        let m = symbol_address(&exe, "main");
        let mut state: u64 = 0x9e3779b97f4a7c15;
        let mut next = || { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state };
        for round in 0..rounds {
            let mut bytes = good.clone();
            let n = 1 + (next() % 16) as usize;
            for _ in 0..n {
                let pos = if round % 4 == 0 { (next() as usize) % bytes.len() } else { let r = ranges[(next() as usize) % ranges.len()]; r.0 + (next() as usize) % r.1 };
                bytes[pos] = next() as u8;
            }
            let path = dir.join(&format!("{variant}-{round}"));
            std::fs::write(&path, &bytes).unwrap();
            let mut s = Symbolizer::new(Vec::new());
            for addr in [t, t + 3, m, m + 5, 0x10] {
                let module = ModuleRef { path: &path, start: 0x5555_0000_0000, file_offset: 0 };
                let _ = s.symbolize(&module, 0x5555_0000_0000 + addr, round % 2 == 0);
            }
            std::fs::remove_file(&path).unwrap();
        }
    }
}
