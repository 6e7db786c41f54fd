# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_rpull_global_optspecs
    string join \n root= a/all-tags platform= q/quiet disable-content-trust= max-concurrent-downloads= format= h/help V/version
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
complete -c rpull -n "__fish_rpull_needs_command" -l max-concurrent-downloads -d 'Maximum number of layers downloaded at the same time' -r
complete -c rpull -n "__fish_rpull_needs_command" -l format -d 'Output format' -r -f -a "plain\t'docker\'s lines (progress bars on a terminal)'
json\t'One JSON object per line, in the Engine API\'s message shape, ending with a result'"
complete -c rpull -n "__fish_rpull_needs_command" -s a -l all-tags -d 'Download all tagged images in the repository'
complete -c rpull -n "__fish_rpull_needs_command" -s q -l quiet -d 'Suppress verbose output'
complete -c rpull -n "__fish_rpull_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c rpull -n "__fish_rpull_needs_command" -s V -l version -d 'Print version'
complete -c rpull -n "__fish_rpull_needs_command" -a "pull" -d 'Download an image from a registry (the default action)'
complete -c rpull -n "__fish_rpull_needs_command" -a "check" -d 'Verify the image store (blob digests, index references, unpacked layers) and optionally repair it'
complete -c rpull -n "__fish_rpull_needs_command" -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l platform -d 'Set platform if server is multi-platform capable' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l disable-content-trust -d 'Skip image verification (accepted for docker compatibility; rpull always verifies digests)' -r -f -a "true\t''
false\t''"
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l max-concurrent-downloads -d 'Maximum number of layers downloaded at the same time' -r
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l format -d 'Output format' -r -f -a "plain\t'docker\'s lines (progress bars on a terminal)'
json\t'One JSON object per line, in the Engine API\'s message shape, ending with a result'"
complete -c rpull -n "__fish_rpull_using_subcommand pull" -l root -d 'Directory of the image store (an OCI image layout)' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand pull" -s a -l all-tags -d 'Download all tagged images in the repository'
complete -c rpull -n "__fish_rpull_using_subcommand pull" -s q -l quiet -d 'Suppress verbose output'
complete -c rpull -n "__fish_rpull_using_subcommand pull" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c rpull -n "__fish_rpull_using_subcommand check" -l root -d 'Directory of the image store (an OCI image layout)' -r -F
complete -c rpull -n "__fish_rpull_using_subcommand check" -l repair -d 'Remove corrupt blobs, incomplete layers and leftovers of interrupted runs, so that pulling again completes the store'
complete -c rpull -n "__fish_rpull_using_subcommand check" -s h -l help -d 'Print help'
complete -c rpull -n "__fish_rpull_using_subcommand help; and not __fish_seen_subcommand_from pull check help" -f -a "pull" -d 'Download an image from a registry (the default action)'
complete -c rpull -n "__fish_rpull_using_subcommand help; and not __fish_seen_subcommand_from pull check help" -f -a "check" -d 'Verify the image store (blob digests, index references, unpacked layers) and optionally repair it'
complete -c rpull -n "__fish_rpull_using_subcommand help; and not __fish_seen_subcommand_from pull check help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
