# Sourced by tools/riot/setup and tests/riot/run: when JETON_GIT_MIRRORS names a directory of
# local mirrors, every git process started from here on fetches https://github.com/<owner>/<name>
# (with or without .git) from <dir>/<owner>+<name>/repo instead. That covers the clones this
# repository's scripts make and the ones they start: RIOT's pkg/ downloads (CMSIS_5, nrfx,
# printf) and c2rust's build (tinycbor). It uses git's url.<base>.insteadOf through
# GIT_CONFIG_COUNT, so no git configuration file is changed.

jeton_git_mirrors() {
  local mirrors=${JETON_GIT_MIRRORS:-} repo owner_name count
  [ -n "$mirrors" ] || return 0
  if [ ! -d "$mirrors" ]; then
    echo "JETON_GIT_MIRRORS=$mirrors is not a directory" >&2
    return 1
  fi
  count=${GIT_CONFIG_COUNT:-0}
  for repo in "$mirrors"/*+*/repo; do
    [ -d "$repo" ] || continue
    owner_name=$(basename "$(dirname "$repo")")
    # The longer prefix wins, so ".git" URLs take the first entry and bare ones the second.
    for suffix in .git ""; do
      export "GIT_CONFIG_KEY_$count=url.$repo.insteadOf"
      export "GIT_CONFIG_VALUE_$count=https://github.com/${owner_name/+//}$suffix"
      count=$((count + 1))
    done
  done
  # A mirror must answer as GitHub does: partial clones included (RIOT fetches CMSIS_5 with
  # --filter=blob:none and checks out only the paths it needs; a mirror may lack the blobs of
  # the others). git clears GIT_CONFIG_* for a local upload-pack, so the settings travel on
  # its command line: RIOT's package clones fetch from a remote named origin.
  export "GIT_CONFIG_KEY_$count=remote.origin.uploadpack"
  export "GIT_CONFIG_VALUE_$count=git -c uploadpack.allowFilter=true -c uploadpack.allowAnySHA1InWant=true upload-pack"
  count=$((count + 1))
  export GIT_CONFIG_COUNT=$count
}
