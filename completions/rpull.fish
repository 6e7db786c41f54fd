# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_rpull_global_optspecs
    string join \n root= a/all-tags platform= q/quiet disable-content-trust= creds= authfile= tls-verify= cert-dir= os= arch= variant= max-concurrent-downloads= format= insecure-registry= registry-mirror= retry= retry-delay= config= parallel-download-threshold= parallel-chunk-size= connections-per-blob= max-connections= read-timeout= h/help V/version
end

function __fish_rpull_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_rpull_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_rpull_using_subcommand
    set -l cmd (__fish_rpull_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c rpull -n "__fish_rpull_needs_command" -l root -d 'Directory of the image store (an OCI image layout)' -r -F
complete -c rpull -n "__fish_rpull_needs_command" -l platform -d 'Set platform if server is multi-platform capable' -r
complete -c rpull -n "__fish_rpull_needs_command" -l disable-content-trust -d 'Skip image verification (default true; DOCKER_CONTENT_TRUST=1 makes it false, and rpull then refuses to pull: it does not implement Docker Content Trust / Notary v1. Digests are always verified)' -r -f -a "true\t''
false\t''"
complete -c rpull -n "__fish_rpull_needs_command" -l creds -d 'Use USERNAME[:PASSWORD] for accessing the registry (the password is prompted for on a terminal when omitted); wins over stored credentials for this call' -r
complete -c rpull -n "__fish_rpull_needs_command" -l authfile -d 'Path of the authentication file (config.json format), consulted before docker\'s config' -r -F
complete -c rpull -n "__fish_rpull_needs_command" -l tls-verify -d 'Require HTTPS and verify certificates when contacting the registry (false: allow unverified TLS and plain HTTP for this registry, for this call only)' -r -f -a "true\t''
false\t''"
complete -c rpull -n "__fish_rpull_needs_command" -l cert-dir -d 'Use certificates at DIR (*.crt CA roots, *.cert + *.key client pairs) to connect to the registry of this pull, instead of its certs.d directory' -r -F
complete -c rpull -n "__fish_rpull_needs_command" -l os -d 'Use OS instead of the running OS for choosing images (cannot be used with --platform)' -r
complete -c rpull -n "__fish_rpull_needs_command" -l arch -d 'Use ARCH instead of the architecture of the machine for choosing images (cannot be used with --platform)' -r
complete -c rpull -n "__fish_rpull_needs_command" -l variant -d 'Use VARIANT instead of the running architecture variant for choosing images (cannot be used with --platform)' -r
complete -c rpull -n "__fish_rpull_needs_command" -l max-concurrent-downloads -d 'Maximum number of layers downloaded at the same time [default: 3, or the config file\'s]' -r
complete -c rpull -n "__fish_rpull_needs_command" -l format -d 'Output format' -r -f -a "plain\t'docker\'s lines (progress bars on a terminal)'
json\t'One JSON object per line, in the Engine API\'s message shape, ending with a result'"
complete -c rpull -n "__fish_rpull_needs_command" -l insecure-registry -d 'Allow plain HTTP and unverified TLS for this registry (HOST[:PORT] or an IP CIDR; repeatable; loopback is always allowed)' -r
complete -c rpull -n "__fish_rpull_needs_command" -l registry-mirror -d 'Try this mirror before Docker Hub for Docker Hub images (URL; repeatable, tried in order)' -r
complete -c rpull -n "__fish_rpull_needs_command" -l retry -d 'Retries of a failed layer download after the first attempt (docker makes 5 attempts in all)' -r
complete -c rpull -n "__fish_rpull_needs_command" -l retry-delay -d 'Fixed delay between download retries, e.g. 500ms, 2s, 1m [default: docker\'s 5s, 10s, 15s, 20s]' -r
complete -c rpull -n "__fish_rpull_needs_command" -l config -d 'rpull\'s config file (JSON) [default: <config dir>/rpull/config.json]' -r -F
complete -c rpull -n "__fish_rpull_needs_command" -l parallel-download-threshold -d 'Fetch blobs of at least this size as several concurrent ranges, e.g. 64MiB [default: 64MiB, or the config file\'s]' -r
complete -c rpull -n "__fish_rpull_needs_command" -l parallel-chunk-size -d 'The size of one range of such a download, e.g. 16MiB [default: 16MiB, or the config file\'s]' -r
complete -c rpull -n "__fish_rpull_needs_command" -l connections-per-blob -d 'Concurrent ranges of one large blob; 1 fetches every blob as one stream [default: 4, or the config file\'s]' -r
complete -c rpull -n "__fish_rpull_needs_command" -l max-connections -d 'Open blob connections of this pull in all, whole layers and ranges [default: 12, or the config file\'s]' -r
complete -c rpull -n "__fish_rpull_needs_command" -l read-timeout -d 'Give up on a registry answer after this long without data (tests use short values)' -r
complete -c rpull -n "__fish_rpull_needs_command" -s a -l all-tags -d 'Download all tagged images in the repository'
complete -c rpull -n "__fish_rpull_needs_command" -s q -l quiet -d 'Suppress verbose output'
complete -c rpull -n "__fish_rpull_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c rpull -n "__fish_rpull_needs_command" -s V -l version -d 'Print version'
complete -c rpull -n "__fish_rpull_needs_command" -a "pull" -d 'Download an image from a registry (the default action)'
complete -c rpull -n "__fish_rpull_needs_command" -a "login" -d 'Log in to a registry (Docker Hub when no server is given)'
complete -c rpull -n "__fish_rpull_needs_command" -a "logout" -d 'Log out from a registry (Docker Hub when no server is given)'
complete -c rpull -n "__fish_rpull_needs_command" -a "images" -d 'List images'
complete -c rpull -n "__fish_rpull_needs_command" -a "rmi" -d 'Remove one or more images, then the blobs and layers nothing uses any more'
complete -c rpull -n "__fish_rpull_needs_command" -a "prune" -d 'Remove unreferenced blobs, unpacked layers, partial downloads and temporary files'
complete -c rpull -n "__fish_rpull_needs_command" -a "save" -d 'Save one or more images to a tar archive (streamed to STDOUT by default)'
complete -c rpull -n "__fish_rpull_needs_command" -a "rootfs" -d 'Write the flattened root filesystem of an image into a directory'
complete -c rpull -n "__fish_rpull_needs_command" -a "check" -d 'Verify the image store (blob digests, index references, unpacked layers) and optionally repair it'
complete -c rpull -n "__fish_rpull_needs_command" -a "serve" -d 'Run rpull as a service: the Kubernetes CRI image service (gRPC on a unix socket) and/or the fleet pull API over HTTP'
complete -c rpull -n "__fish_rpull_needs_command" -a "agent" -d 'Run a fleet agent: take the pull jobs addressed to this node from NATS and pull them here'
complete -c rpull -n "__fish_rpull_needs_command" -a "token" -d 'Print a bearer token for the fleet pull API'
complete -c rpull -n "__fish_rpull_needs_command" -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l platform -d 'Set platform if server is multi-platform capable' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l disable-content-trust -d 'Skip image verification (default true; DOCKER_CONTENT_TRUST=1 makes it false, and rpull then refuses to pull: it does not implement Docker Content Trust / Notary v1. Digests are always verified)' -r -f -a "true\t''
false\t''"
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l creds -d 'Use USERNAME[:PASSWORD] for accessing the registry (the password is prompted for on a terminal when omitted); wins over stored credentials for this call' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l authfile -d 'Path of the authentication file (config.json format), consulted before docker\'s config' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l tls-verify -d 'Require HTTPS and verify certificates when contacting the registry (false: allow unverified TLS and plain HTTP for this registry, for this call only)' -r -f -a "true\t''
false\t''"
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l cert-dir -d 'Use certificates at DIR (*.crt CA roots, *.cert + *.key client pairs) to connect to the registry of this pull, instead of its certs.d directory' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l os -d 'Use OS instead of the running OS for choosing images (cannot be used with --platform)' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l arch -d 'Use ARCH instead of the architecture of the machine for choosing images (cannot be used with --platform)' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l variant -d 'Use VARIANT instead of the running architecture variant for choosing images (cannot be used with --platform)' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l max-concurrent-downloads -d 'Maximum number of layers downloaded at the same time [default: 3, or the config file\'s]' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l format -d 'Output format' -r -f -a "plain\t'docker\'s lines (progress bars on a terminal)'
json\t'One JSON object per line, in the Engine API\'s message shape, ending with a result'"
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l insecure-registry -d 'Allow plain HTTP and unverified TLS for this registry (HOST[:PORT] or an IP CIDR; repeatable; loopback is always allowed)' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l registry-mirror -d 'Try this mirror before Docker Hub for Docker Hub images (URL; repeatable, tried in order)' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l retry -d 'Retries of a failed layer download after the first attempt (docker makes 5 attempts in all)' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l retry-delay -d 'Fixed delay between download retries, e.g. 500ms, 2s, 1m [default: docker\'s 5s, 10s, 15s, 20s]' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l config -d 'rpull\'s config file (JSON) [default: <config dir>/rpull/config.json]' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l parallel-download-threshold -d 'Fetch blobs of at least this size as several concurrent ranges, e.g. 64MiB [default: 64MiB, or the config file\'s]' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l parallel-chunk-size -d 'The size of one range of such a download, e.g. 16MiB [default: 16MiB, or the config file\'s]' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l connections-per-blob -d 'Concurrent ranges of one large blob; 1 fetches every blob as one stream [default: 4, or the config file\'s]' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l max-connections -d 'Open blob connections of this pull in all, whole layers and ranges [default: 12, or the config file\'s]' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l read-timeout -d 'Give up on a registry answer after this long without data (tests use short values)' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l root -d 'Directory of the image store (an OCI image layout)' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand pull" -s a -l all-tags -d 'Download all tagged images in the repository'
complete -c rpull -n "__fish_rpull_using_subcommand pull" -s q -l quiet -d 'Suppress verbose output'
complete -c rpull -n "__fish_rpull_using_subcommand pull" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c rpull -n "__fish_rpull_using_subcommand login" -s u -l username -d 'Username' -r
complete -c rpull -n "__fish_rpull_using_subcommand login" -s p -l password -d 'Password or Personal Access Token (PAT)' -r
complete -c rpull -n "__fish_rpull_using_subcommand login" -l root -d 'Directory of the image store (an OCI image layout)' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand login" -l password-stdin -d 'Take the Password or Personal Access Token (PAT) from stdin'
complete -c rpull -n "__fish_rpull_using_subcommand login" -s h -l help -d 'Print help'
complete -c rpull -n "__fish_rpull_using_subcommand logout" -l root -d 'Directory of the image store (an OCI image layout)' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand logout" -s h -l help -d 'Print help'
complete -c rpull -n "__fish_rpull_using_subcommand images" -l format -d 'Output format' -r -f -a "table\t'docker\'s table'
json\t'One JSON object per image and line, as `docker images --format json`'"
complete -c rpull -n "__fish_rpull_using_subcommand images" -l root -d 'Directory of the image store (an OCI image layout)' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand images" -s q -l quiet -d 'Only show image IDs'
complete -c rpull -n "__fish_rpull_using_subcommand images" -l digests -d 'Show digests'
complete -c rpull -n "__fish_rpull_using_subcommand images" -l no-trunc -d 'Don\'t truncate output'
complete -c rpull -n "__fish_rpull_using_subcommand images" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c rpull -n "__fish_rpull_using_subcommand rmi" -l root -d 'Directory of the image store (an OCI image layout)' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand rmi" -s f -l force -d 'Force removal of an image ID referenced by several repositories or tags'
complete -c rpull -n "__fish_rpull_using_subcommand rmi" -l no-prune -d 'Do not delete the blobs and unpacked layers left unreferenced'
complete -c rpull -n "__fish_rpull_using_subcommand rmi" -s h -l help -d 'Print help'
complete -c rpull -n "__fish_rpull_using_subcommand prune" -l root -d 'Directory of the image store (an OCI image layout)' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand prune" -s h -l help -d 'Print help'
complete -c rpull -n "__fish_rpull_using_subcommand save" -s o -l output -d 'Write to a file, instead of STDOUT' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand save" -l format -d 'Archive format' -r -f -a "docker\t'The archive `docker save` writes (for `docker load`, `podman load`, `skopeo docker-archive:`)'
oci\t'An OCI image layout (for `skopeo oci-archive:` and other OCI tools)'"
complete -c rpull -n "__fish_rpull_using_subcommand save" -l root -d 'Directory of the image store (an OCI image layout)' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand save" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c rpull -n "__fish_rpull_using_subcommand rootfs" -l root -d 'Directory of the image store (an OCI image layout)' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand rootfs" -s h -l help -d 'Print help'
complete -c rpull -n "__fish_rpull_using_subcommand check" -l root -d 'Directory of the image store (an OCI image layout)' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand check" -l repair -d 'Remove corrupt blobs, incomplete layers and leftovers of interrupted runs, so that pulling again completes the store'
complete -c rpull -n "__fish_rpull_using_subcommand check" -s h -l help -d 'Print help'
complete -c rpull -n "__fish_rpull_using_subcommand serve" -l cri-socket -d 'Serve the CRI image service (runtime.v1.ImageService) on this unix socket [default: /run/rpull/cri.sock when --listen is not given]' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand serve" -l listen -d 'Serve the pull API on this address (HOST:PORT; port 0 picks a free one, printed on stderr)' -r
complete -c rpull -n "__fish_rpull_using_subcommand serve" -l nats -d 'The NATS server the agents listen on (e.g. nats://127.0.0.1:4222, tls://user:password@nats.lan:4222); without it, jobs run on this node; also read from RPULL_NATS_URL, which keeps a password out of the process list' -r
complete -c rpull -n "__fish_rpull_using_subcommand serve" -l signing-key-file -d 'The file holding the key that signs API tokens (HS256) [default: the config file\'s signing-key-file]' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand serve" -l job-timeout -d 'How long a request waits for the agents\' answers' -r
complete -c rpull -n "__fish_rpull_using_subcommand serve" -l hostname -d 'This node\'s hostname for jobs run here without --nats [default: the system\'s]' -r
complete -c rpull -n "__fish_rpull_using_subcommand serve" -l label -d 'This node\'s label for jobs run here without --nats (KEY=VALUE; repeatable)' -r
complete -c rpull -n "__fish_rpull_using_subcommand serve" -l http-read-timeout -d 'How long a client may take to send a request\'s head, then its body (tests use short values)' -r
complete -c rpull -n "__fish_rpull_using_subcommand serve" -l nats-ca -d 'CA certificates (PEM) NATS\'s certificate must chain to, instead of the system\'s; TLS is then required [default: the config file\'s nats-ca]' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand serve" -l nats-cert -d 'A client certificate (PEM) for a NATS server that verifies clients, with --nats-key [default: the config file\'s nats-cert]' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand serve" -l nats-key -d 'The key (PEM) of --nats-cert [default: the config file\'s nats-key]' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand serve" -l nats-nkey-file -d 'A file holding the NATS user\'s nkey seed (SU...) [default: the config file\'s nats-nkey-file]' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand serve" -l config -d 'rpull\'s config file (JSON) [default: <config dir>/rpull/config.json]' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand serve" -l progress-timeout -d 'Fail a CRI pull that receives no data for this long, e.g. 30s, 5m; 0 never gives up' -r
complete -c rpull -n "__fish_rpull_using_subcommand serve" -l read-timeout -d 'Give up on a registry answer after this long without data (tests use short values)' -r
complete -c rpull -n "__fish_rpull_using_subcommand serve" -l root -d 'Directory of the image store (an OCI image layout)' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand serve" -s h -l help -d 'Print help'
complete -c rpull -n "__fish_rpull_using_subcommand agent" -l nats -d 'The NATS server (e.g. nats://127.0.0.1:4222, tls://user:password@nats.lan:4222); also read from RPULL_NATS_URL, which keeps a password out of the process list' -r
complete -c rpull -n "__fish_rpull_using_subcommand agent" -l nats-ca -d 'CA certificates (PEM) NATS\'s certificate must chain to, instead of the system\'s; TLS is then required [default: the config file\'s nats-ca]' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand agent" -l nats-cert -d 'A client certificate (PEM) for a NATS server that verifies clients, with --nats-key [default: the config file\'s nats-cert]' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand agent" -l nats-key -d 'The key (PEM) of --nats-cert [default: the config file\'s nats-key]' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand agent" -l nats-nkey-file -d 'A file holding the NATS user\'s nkey seed (SU...) [default: the config file\'s nats-nkey-file]' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand agent" -l hostname -d 'This node\'s name, the target `/node/NAME/...` reaches [default: the system\'s hostname]' -r
complete -c rpull -n "__fish_rpull_using_subcommand agent" -l label -d 'A label selectors reach this node by (KEY=VALUE, dot segments in VALUE match by prefix; repeatable)' -r
complete -c rpull -n "__fish_rpull_using_subcommand agent" -l concurrency -d 'Jobs pulled at the same time' -r
complete -c rpull -n "__fish_rpull_using_subcommand agent" -l progress-timeout -d 'Fail a job\'s pull that receives no data for this long, e.g. 30s, 5m; 0 never gives up' -r
complete -c rpull -n "__fish_rpull_using_subcommand agent" -l config -d 'rpull\'s config file (JSON) [default: <config dir>/rpull/config.json]' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand agent" -l root -d 'Directory of the image store (an OCI image layout)' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand agent" -s h -l help -d 'Print help'
complete -c rpull -n "__fish_rpull_using_subcommand token" -l signing-key-file -d 'The file holding the signing key (the one the server has)' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand token" -l sub -d 'Who the token is for (its `sub` claim)' -r
complete -c rpull -n "__fish_rpull_using_subcommand token" -l role -d 'A role (repeatable)' -r -f -a "admin\t'Every permission'
write\t'docker:write and job:read'
read\t'job:read'"
complete -c rpull -n "__fish_rpull_using_subcommand token" -l permission -d 'An extra permission, RESOURCE:VERB (e.g. docker:write; repeatable)' -r
complete -c rpull -n "__fish_rpull_using_subcommand token" -l ttl -d 'How long the token is valid (e.g. 30m, 1h, 24h)' -r
complete -c rpull -n "__fish_rpull_using_subcommand token" -l root -d 'Directory of the image store (an OCI image layout)' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand token" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c rpull -n "__fish_rpull_using_subcommand help; and not __fish_seen_subcommand_from pull login logout images rmi prune save rootfs check serve agent token help" -f -a "pull" -d 'Download an image from a registry (the default action)'
complete -c rpull -n "__fish_rpull_using_subcommand help; and not __fish_seen_subcommand_from pull login logout images rmi prune save rootfs check serve agent token help" -f -a "login" -d 'Log in to a registry (Docker Hub when no server is given)'
complete -c rpull -n "__fish_rpull_using_subcommand help; and not __fish_seen_subcommand_from pull login logout images rmi prune save rootfs check serve agent token help" -f -a "logout" -d 'Log out from a registry (Docker Hub when no server is given)'
complete -c rpull -n "__fish_rpull_using_subcommand help; and not __fish_seen_subcommand_from pull login logout images rmi prune save rootfs check serve agent token help" -f -a "images" -d 'List images'
complete -c rpull -n "__fish_rpull_using_subcommand help; and not __fish_seen_subcommand_from pull login logout images rmi prune save rootfs check serve agent token help" -f -a "rmi" -d 'Remove one or more images, then the blobs and layers nothing uses any more'
complete -c rpull -n "__fish_rpull_using_subcommand help; and not __fish_seen_subcommand_from pull login logout images rmi prune save rootfs check serve agent token help" -f -a "prune" -d 'Remove unreferenced blobs, unpacked layers, partial downloads and temporary files'
complete -c rpull -n "__fish_rpull_using_subcommand help; and not __fish_seen_subcommand_from pull login logout images rmi prune save rootfs check serve agent token help" -f -a "save" -d 'Save one or more images to a tar archive (streamed to STDOUT by default)'
complete -c rpull -n "__fish_rpull_using_subcommand help; and not __fish_seen_subcommand_from pull login logout images rmi prune save rootfs check serve agent token help" -f -a "rootfs" -d 'Write the flattened root filesystem of an image into a directory'
complete -c rpull -n "__fish_rpull_using_subcommand help; and not __fish_seen_subcommand_from pull login logout images rmi prune save rootfs check serve agent token help" -f -a "check" -d 'Verify the image store (blob digests, index references, unpacked layers) and optionally repair it'
complete -c rpull -n "__fish_rpull_using_subcommand help; and not __fish_seen_subcommand_from pull login logout images rmi prune save rootfs check serve agent token help" -f -a "serve" -d 'Run rpull as a service: the Kubernetes CRI image service (gRPC on a unix socket) and/or the fleet pull API over HTTP'
complete -c rpull -n "__fish_rpull_using_subcommand help; and not __fish_seen_subcommand_from pull login logout images rmi prune save rootfs check serve agent token help" -f -a "agent" -d 'Run a fleet agent: take the pull jobs addressed to this node from NATS and pull them here'
complete -c rpull -n "__fish_rpull_using_subcommand help; and not __fish_seen_subcommand_from pull login logout images rmi prune save rootfs check serve agent token help" -f -a "token" -d 'Print a bearer token for the fleet pull API'
complete -c rpull -n "__fish_rpull_using_subcommand help; and not __fish_seen_subcommand_from pull login logout images rmi prune save rootfs check serve agent token help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
