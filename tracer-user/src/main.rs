fn main() -> anyhow::Result<()> {
    let mut t = crashtrace::loader::Tracer::load(&Default::default())?;
    let mut rb = t.take_events()?;
    eprintln!("loaded");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while std::time::Instant::now() < end {
        while let Some(item) = rb.next() {
            match crashtrace::events::decode(&item) {
                Ok(crashtrace::events::Event::State(s)) => {
                    let mut s2 = (*s).clone(); s2.snapshot.clear();
                    println!("{:#x?}", s2.regs.map(|r| (r[16], r[19])));
                    s2.regs = None;
                    println!("{s2:#x?}");
                }
                other => println!("{other:?}"),
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    println!("losses {:?}", t.losses());
    Ok(())
}
