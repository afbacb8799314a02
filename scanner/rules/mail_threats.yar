/*
    Delivery tricks of mail-borne malware campaigns. None of these files is malware by itself,
    so every rule carries meta outcome = "match": the YARA engine reports a content match and
    the tenant's policy (on_content_match) decides, separately from on_virus. Each rule is
    matched against every MIME part and archive member, so a trick hidden in a zip is found.
*/

/*
    HTML smuggling: an HTML attachment whose script builds the payload in the browser and hands
    it to the user as a download, so the file never crosses the gateway as a file
    (MITRE ATT&CK T1027.006; seen with Qakbot, IcedID, NOBELIUM/ISOMorph).
*/
rule HTML_Smuggling_Blob_Download
{
    meta:
        description = "HTML whose script saves a script-built Blob as a download"
        reference = "https://attack.mitre.org/techniques/T1027/006/"
        outcome = "match"

    strings:
        $html1 = "<html" nocase
        $html2 = "<script" nocase
        $html3 = "<!doctype html" nocase
        $save = "msSaveOrOpenBlob" nocase
        $blob = /new\s+Blob\s*\(/ nocase
        $url = /URL\s*\.\s*createObjectURL/ nocase
        $download = /\.\s*download\s*=/ nocase
        $dlattr = /setAttribute\s*\(\s*['"]download['"]/ nocase

    condition:
        filesize < 20MB and any of ($html*) and
        ($save or ($blob and $url and ($download or $dlattr)))
}

rule HTML_Smuggling_Embedded_Payload
{
    meta:
        description = "HTML carrying a base64 executable, zip or OLE file for a download link or atob()"
        reference = "https://attack.mitre.org/techniques/T1027/006/"
        outcome = "match"

    strings:
        $html1 = "<html" nocase
        $html2 = "<script" nocase
        $html3 = "<!doctype html" nocase
        // data: URIs and atob() arguments that decode to MZ, PK\x03\x04 or an OLE header.
        $datauri = /data:[a-z0-9\/.+-]{0,80};base64,(TVq|UEsDB|0M8R4KGxGuE)/ nocase
        $atob = /atob\s*\(\s*['"](TVq|UEsDB|0M8R4KGxGuE)/
        $download = "download" nocase

    condition:
        filesize < 20MB and any of ($html*) and ($atob or ($datauri and $download))
}

/*
    Containers that carry a payload past Mark-of-the-Web (a file extracted from an ISO/VHD is not
    marked as downloaded) and shortcuts that run commands: the 2022-2023 replacements for
    Office macros (Bumblebee, Qakbot, Emotet). Usually inside a zip, which the scanner opens.
*/
rule Disk_Image_ISO9660
{
    meta:
        description = "ISO 9660 disk image (.iso/.img)"
        outcome = "match"

    condition:
        filesize > 0x8006 and uint8(0x8000) == 1 and uint32(0x8001) == 0x30304443 and
        uint8(0x8005) == 0x31  // "CD001" in the first volume descriptor
}

rule Disk_Image_VHD
{
    meta:
        description = "Virtual hard disk (.vhd/.vhdx)"
        outcome = "match"

    strings:
        $vhdx = "vhdxfile"
        $vhd = "conectix"

    condition:
        $vhdx at 0 or $vhd at 0 or $vhd at filesize - 512
}

rule Windows_Shortcut_LNK
{
    meta:
        description = "Windows shortcut (.lnk): one click runs its command line"
        outcome = "match"

    strings:
        // Shell link header: size 0x4C, then CLSID {00021401-0000-0000-C000-000000000046}.
        $header = { 4C 00 00 00 01 14 02 00 00 00 00 00 C0 00 00 00 00 00 00 46 }

    condition:
        $header at 0
}

/*
    OneNote sections with an embedded file that runs when double-clicked behind a fake "open"
    button (2023 campaigns: Qakbot, AsyncRAT, Emotet). A notebook with pictures only is not hit.
*/
rule OneNote_Embedded_Executable_Content
{
    meta:
        description = "OneNote section embedding an executable, script, HTA or shortcut"
        outcome = "match"

    strings:
        // OneNote revision store file: {7B5C52E4-D88C-4DA7-AEB1-5378D02996D3}
        $one = { E4 52 5C 7B 8C D8 A7 4D AE B1 53 78 D0 29 96 D3 }
        // FileDataStoreObject header: {BDE316E7-2665-4511-A4C4-8D4D0B7A9EAC}
        $fdso = { E7 16 E3 BD 65 26 11 45 A4 C4 8D 4D 0B 7A 9E AC }
        $pe = "This program cannot be run in DOS mode"
        $hta = "<HTA:APPLICATION" nocase
        $wsh = "WScript.Shell" nocase
        $ps = "powershell" nocase
        $bat = "@echo off" nocase
        $lnk = { 4C 00 00 00 01 14 02 00 00 00 00 00 C0 00 00 00 00 00 00 46 }

    condition:
        $one at 0 and
        for any i in (1 .. #fdso) : (
            for any of ($pe, $hta, $wsh, $ps, $bat, $lnk) : ($ in (@fdso[i] .. @fdso[i] + 0x100000))
        )
}
