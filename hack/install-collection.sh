#!/usr/bin/env bash
# Build the collection's tarball and install it as a user would, outside the checkout:
#   hack/install-collection.sh DEST
# leaves DEST/mlstack-mlflow-<version>.tar.gz, DEST/collections/ansible_collections/mlstack/mlflow and
# DEST/ansible.cfg (the checkout's settings, with collections_path = DEST/collections only). Run
# playbooks by their collection names with ANSIBLE_CONFIG=DEST/ansible.cfg (hack/with-stack-env honours
# MLSTACK_ANSIBLE_CONFIG), e.g. `ansible-playbook -i inventory/local mlstack.mlflow.site --tags mlflow`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:?usage: hack/install-collection.sh DEST}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
galaxy="$(dirname "$(command -v ansible-playbook || echo "$here/.venv/bin/ansible-playbook")")/ansible-galaxy"
[[ -x "$galaxy" ]] || galaxy="$here/.venv/bin/ansible-galaxy"

rm -rf "$dest/collections" "$dest"/mlstack-mlflow-*.tar.gz
(cd "$here" && "$galaxy" collection build --force --output-path "$dest" >/dev/null)
tarball="$(ls "$dest"/mlstack-mlflow-*.tar.gz)"
sed -e "s|^collections_path *=.*|collections_path = $dest/collections|" "$here/ansible.cfg" > "$dest/ansible.cfg"
grep -q "^collections_path = $dest/collections$" "$dest/ansible.cfg"
# Dependencies come from the ansible package (requirements.txt); there is no Galaxy to resolve them from.
(cd "$dest" && ANSIBLE_CONFIG="$dest/ansible.cfg" "$galaxy" collection install --no-deps --force -p "$dest/collections" "$tarball" >/dev/null)
echo "$tarball"
