//! `estate-crm export` and `estate-crm import`: the files and the words around the store's
//! `export_*` / `import_*`.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use estate_crm_store::{SqliteStore, TransferSummary};

use crate::app::without_password;
use crate::config::{Database, ExportArgs, ImportArgs};

/// Writes the database `args` name to its output; says what was written on stderr (stdout may be
/// the export itself).
pub fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let database = args.database()?;
    let out: Box<dyn Write + Send> = match &args.output {
        Some(path) => Box::new(BufWriter::new(create_owner_only(path)?)),
        None => Box::new(BufWriter::new(std::io::stdout())),
    };
    let exported = match &database {
        Database::Embedded => estate_crm_store::export_sqlite(&args.data_dir, out),
        Database::Postgres { url, .. } => runtime()?.block_on(estate_crm_store::export_postgres(url, out)),
    };
    let summary = match exported {
        Ok(summary) => summary,
        Err(err) => {
            // A file cut short would only be refused by an import, and it holds secrets.
            if let Some(path) = &args.output {
                let _ = std::fs::remove_file(path);
            }
            anyhow::bail!("could not export {}: {err}", place(&database, &args.data_dir));
        }
    };
    let to = args.output.as_ref().map_or_else(|| "standard output".to_owned(), |p| p.display().to_string());
    eprintln!("exported {summary} from {} to {to}", place(&database, &args.data_dir));
    Ok(())
}

/// Reads an export into the empty database `args` name; says what was imported.
pub fn import(args: &ImportArgs) -> anyhow::Result<()> {
    let database = args.database()?;
    let input: Box<dyn BufRead + Send> = match &args.input {
        Some(path) => Box::new(BufReader::new(
            File::open(path).with_context(|| format!("could not read --input {}", path.display()))?,
        )),
        None => Box::new(BufReader::new(std::io::stdin())),
    };
    let imported = match &database {
        Database::Embedded => estate_crm_store::import_sqlite(&args.data_dir, input),
        Database::Postgres { url, .. } => runtime()?.block_on(estate_crm_store::import_postgres(url, input)),
    };
    let summary: TransferSummary =
        imported.map_err(|err| anyhow::anyhow!("could not import into {}: {err}", place(&database, &args.data_dir)))?;
    println!(
        "imported {summary} into {}; ids keep the tag {:?} and tokens keep working",
        place(&database, &args.data_dir),
        summary.tag
    );
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// Where the data is, as the messages say it.
fn place(database: &Database, data_dir: &Path) -> String {
    match database {
        Database::Embedded => SqliteStore::database_path(data_dir).display().to_string(),
        Database::Postgres { url, .. } => format!("PostgreSQL at {}", without_password(url)),
    }
}

/// The export file, readable and writable by its owner alone: it holds endpoint secrets and
/// password hashes. A file that was there already is emptied and its mode narrowed too.
fn create_owner_only(path: &PathBuf) -> anyhow::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("could not write --output {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("could not make --output {} readable by you alone", path.display()))?;
    Ok(file)
}
