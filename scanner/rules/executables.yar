/*
    Executable programs attached to mail. These are not viruses by themselves, so the rules carry
    meta outcome = "match": the YARA engine reports them as a content match and the tenant's
    policy (on_content_match) decides, separately from on_virus.
*/
rule Executable_PE
{
    meta:
        description = "Windows PE executable (MZ header pointing at a PE signature)"
        outcome = "match"

    condition:
        filesize > 0x40 and uint16(0) == 0x5A4D and
        uint32(0x3C) < filesize - 4 and uint32(uint32(0x3C)) == 0x00004550
}

rule Executable_ELF
{
    meta:
        description = "ELF executable or shared object (Linux and other Unix systems)"
        outcome = "match"

    condition:
        filesize > 52 and uint32(0) == 0x464C457F and
        (uint16(16) == 2 or uint16(16) == 3 or uint16be(16) == 2 or uint16be(16) == 3)
}
