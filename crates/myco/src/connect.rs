//! Which agent the CLI talks to, and with what token: the flags and
//! environment resolved into a [`myco_client::Client`].

use std::path::Path;

use myco_client::{Client, DEFAULT_API};

/// The token: `--token`/`MYCO_API_TOKEN`, else `api-token` in the data dir
/// (`--data-dir`, or the default one).
pub fn find_token(token: Option<String>, data_dir: Option<&Path>) -> Option<String> {
    token.or_else(|| {
        let dir = data_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(myco_agent::settings::default_data_dir);
        std::fs::read_to_string(dir.join(myco_agent::datadir::API_TOKEN))
            .ok()
            .map(|t| t.trim().to_string())
    })
}

/// A client of `--api` (default [`DEFAULT_API`]) with the token found.
pub fn client(api: Option<&str>, token: Option<String>, data_dir: Option<&Path>) -> Client {
    Client::new(api.unwrap_or(DEFAULT_API)).with_token(find_token(token, data_dir))
}
