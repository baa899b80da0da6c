//! Running one job per VM in dependency order, independent ones at once: what `vmctl up`
//! starts (a VM after those it names in `after`) and `vmctl down` stops (a VM after those that
//! start after it). A job whose dependency failed does not run, and says which one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;

/// How one VM's job ended.
#[derive(Debug)]
pub enum Outcome<T, E> {
    Done(T),
    Failed(E),
    /// Not run, because this dependency did not succeed.
    Skipped(String),
}

/// Run `job` for every key of `deps` (key → the keys it waits for; keys it names that are not
/// keys are taken as done), each as soon as what it waits for is done, on a thread of its own.
/// The outcomes, by key.
pub fn run<T, E, F>(deps: &BTreeMap<String, Vec<String>>, job: F) -> BTreeMap<String, Outcome<T, E>>
where
    T: Send,
    E: Send,
    F: Fn(&str) -> Result<T, E> + Sync,
{
    let mut outcomes: BTreeMap<String, Outcome<T, E>> = BTreeMap::new();
    let mut pending: BTreeSet<&String> = deps.keys().collect();
    let job = &job;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(String, Result<T, E>)>();
        let mut running = 0usize;
        loop {
            // Settle what can be settled: skip those whose dependency failed, start those whose
            // dependencies are done.
            let mut progress = true;
            while progress {
                progress = false;
                for key in pending.clone() {
                    let waits: Vec<&String> =
                        deps[key].iter().filter(|d| deps.contains_key(*d)).collect();
                    if let Some(bad) = waits.iter().find(|d| {
                        matches!(
                            outcomes.get(**d),
                            Some(Outcome::Failed(_)) | Some(Outcome::Skipped(_))
                        )
                    }) {
                        outcomes.insert(key.clone(), Outcome::Skipped((*bad).clone()));
                        pending.remove(key);
                        progress = true;
                    } else if waits
                        .iter()
                        .all(|d| matches!(outcomes.get(*d), Some(Outcome::Done(_))))
                    {
                        pending.remove(key);
                        let (tx, key) = (tx.clone(), key.clone());
                        running += 1;
                        scope.spawn(move || {
                            let r = job(&key);
                            let _ = tx.send((key, r));
                        });
                    }
                }
            }
            if running == 0 {
                // Nothing runs and nothing can start: what is left waits in a circle.
                for key in std::mem::take(&mut pending) {
                    outcomes.insert(key.clone(), Outcome::Skipped(key.clone()));
                }
                break;
            }
            let (key, r) = rx.recv().expect("a job thread reports");
            running -= 1;
            outcomes.insert(
                key,
                match r {
                    Ok(t) => Outcome::Done(t),
                    Err(e) => Outcome::Failed(e),
                },
            );
        }
    });
    outcomes
}

/// The keys in an order that puts each after what it waits for (ties by name); what waits in a
/// circle comes last.
pub fn sequence(deps: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut left: Vec<&String> = deps.keys().collect();
    while !left.is_empty() {
        let ready = left.iter().position(|k| {
            deps[*k]
                .iter()
                .all(|d| !deps.contains_key(d) || out.contains(d))
        });
        let i = ready.unwrap_or(0);
        out.push(left.remove(i).clone());
    }
    out
}

/// The same dependencies turned around: each key waits for those that waited for it.
pub fn reversed(deps: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> =
        deps.keys().map(|k| (k.clone(), Vec::new())).collect();
    for (k, ds) in deps {
        for d in ds {
            if let Some(v) = out.get_mut(d) {
                v.push(k.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn deps(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn dependencies_finish_first_and_independent_jobs_overlap() {
        let d = deps(&[("db", &[]), ("cache", &[]), ("app", &["db", "cache"])]);
        let log = Mutex::new(Vec::new());
        let barrier = std::sync::Barrier::new(2);
        let out = run(&d, |k| {
            if k != "app" {
                // db and cache both get here before either goes on: they run at once.
                barrier.wait();
            }
            log.lock().unwrap().push(k.to_string());
            Ok::<_, String>(k.len())
        });
        let log = log.into_inner().unwrap();
        assert_eq!(log.last().map(String::as_str), Some("app"), "{log:?}");
        assert!(out.values().all(|o| matches!(o, Outcome::Done(_))));
    }

    #[test]
    fn a_failure_skips_what_waits_for_it_and_nothing_else() {
        let d = deps(&[
            ("db", &[]),
            ("app", &["db"]),
            ("web", &["app"]),
            ("lone", &[]),
        ]);
        let out = run(&d, |k| if k == "db" { Err("no disk") } else { Ok(()) });
        assert!(matches!(out["db"], Outcome::Failed("no disk")));
        assert!(matches!(&out["app"], Outcome::Skipped(d) if d == "db"));
        assert!(matches!(&out["web"], Outcome::Skipped(d) if d == "app"));
        assert!(matches!(out["lone"], Outcome::Done(())));
    }

    #[test]
    fn a_sequence_puts_dependencies_first() {
        let d = deps(&[
            ("web", &["api"]),
            ("api", &["db"]),
            ("db", &[]),
            ("cache", &[]),
        ]);
        assert_eq!(sequence(&d), ["cache", "db", "api", "web"]);
    }

    #[test]
    fn turned_around_the_last_goes_first() {
        let d = deps(&[("db", &[]), ("app", &["db"])]);
        let r = reversed(&d);
        assert_eq!(r["db"], vec!["app".to_string()]);
        assert!(r["app"].is_empty());
        let order = Mutex::new(Vec::new());
        run(&r, |k| {
            order.lock().unwrap().push(k.to_string());
            Ok::<_, ()>(())
        });
        assert_eq!(order.into_inner().unwrap(), ["app", "db"]);
    }
}
