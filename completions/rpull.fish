# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_rpull_global_optspecs
    string join \n root= a/all-tags platform= q/quiet disable-content-trust= max-concurrent-downloads= format= insecure-registry= registry-mirror= retry= retry-delay= config= read-timeout= h/help V/version
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
complete -c rpull -n "__fish_rpull_needs_command" -l disable-content-trust -d 'Skip image verification (accepted for docker compatibility; rpull always verifies digests)' -r -f -a "true\t''
false\t''"
complete -c rpull -n "__fish_rpull_needs_command" -l max-concurrent-downloads -d 'Maximum number of layers downloaded at the same time [default: 3, or the config file\'s]' -r
complete -c rpull -n "__fish_rpull_needs_command" -l format -d 'Output format' -r -f -a "plain\t'docker\'s lines (progress bars on a terminal)'
json\t'One JSON object per line, in the Engine API\'s message shape, ending with a result'"
complete -c rpull -n "__fish_rpull_needs_command" -l insecure-registry -d 'Allow plain HTTP and unverified TLS for this registry (HOST[:PORT] or an IP CIDR; repeatable; loopback is always allowed)' -r
complete -c rpull -n "__fish_rpull_needs_command" -l registry-mirror -d 'Try this mirror before Docker Hub for Docker Hub images (URL; repeatable, tried in order)' -r
complete -c rpull -n "__fish_rpull_needs_command" -l retry -d 'Retries of a failed layer download after the first attempt (docker makes 5 attempts in all)' -r
complete -c rpull -n "__fish_rpull_needs_command" -l retry-delay -d 'Fixed delay between download retries, e.g. 500ms, 2s, 1m [default: docker\'s 5s, 10s, 15s, 20s]' -r
complete -c rpull -n "__fish_rpull_needs_command" -l config -d 'rpull\'s config file (JSON) [default: <config dir>/rpull/config.json]' -r -F
complete -c rpull -n "__fish_rpull_needs_command" -l read-timeout -d 'Give up on a registry answer after this long without data (tests use short values)' -r
complete -c rpull -n "__fish_rpull_needs_command" -s a -l all-tags -d 'Download all tagged images in the repository'
complete -c rpull -n "__fish_rpull_needs_command" -s q -l quiet -d 'Suppress verbose output'
complete -c rpull -n "__fish_rpull_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c rpull -n "__fish_rpull_needs_command" -s V -l version -d 'Print version'
complete -c rpull -n "__fish_rpull_needs_command" -a "pull" -d 'Download an image from a registry (the default action)'
complete -c rpull -n "__fish_rpull_needs_command" -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l platform -d 'Set platform if server is multi-platform capable' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l disable-content-trust -d 'Skip image verification (accepted for docker compatibility; rpull always verifies digests)' -r -f -a "true\t''
false\t''"
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l max-concurrent-downloads -d 'Maximum number of layers downloaded at the same time [default: 3, or the config file\'s]' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l format -d 'Output format' -r -f -a "plain\t'docker\'s lines (progress bars on a terminal)'
json\t'One JSON object per line, in the Engine API\'s message shape, ending with a result'"
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l insecure-registry -d 'Allow plain HTTP and unverified TLS for this registry (HOST[:PORT] or an IP CIDR; repeatable; loopback is always allowed)' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l registry-mirror -d 'Try this mirror before Docker Hub for Docker Hub images (URL; repeatable, tried in order)' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l retry -d 'Retries of a failed layer download after the first attempt (docker makes 5 attempts in all)' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l retry-delay -d 'Fixed delay between download retries, e.g. 500ms, 2s, 1m [default: docker\'s 5s, 10s, 15s, 20s]' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l config -d 'rpull\'s config file (JSON) [default: <config dir>/rpull/config.json]' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l read-timeout -d 'Give up on a registry answer after this long without data (tests use short values)' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l root -d 'Directory of the image store (an OCI image layout)' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand pull" -s a -l all-tags -d 'Download all tagged images in the repository'
complete -c rpull -n "__fish_rpull_using_subcommand pull" -s q -l quiet -d 'Suppress verbose output'
complete -c rpull -n "__fish_rpull_using_subcommand pull" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c rpull -n "__fish_rpull_using_subcommand help; and not __fish_seen_subcommand_from pull help" -f -a "pull" -d 'Download an image from a registry (the default action)'
complete -c rpull -n "__fish_rpull_using_subcommand help; and not __fish_seen_subcommand_from pull help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
